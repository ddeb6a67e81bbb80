"""The hot /v1 routes, dispatched without Starlette's route matching, answer as the router
would: the same key check (reloaded keys included), the same error envelopes, and every
other method or path still goes to the app."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from modelport.api.access_log import AccessLog, AccessRecord
from modelport.api.app import build_app
from modelport.api.hot_routes import HotRoutes
from modelport.config import parse_config
from modelport.errors import InvalidRequestError, ModelportError
from modelport.gateway.build import build_state

HOT_PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]


@pytest.fixture
def gateway():
    config = parse_config({
        "server": {"api_keys": ["sk-first"]},
        "models": [{"name": "m", "engine": "openai", "base_url": "http://127.0.0.1:9/v1"}]})
    state = build_state(config)
    with TestClient(build_app(state), raise_server_exceptions=False) as client:
        yield client, state


@pytest.mark.parametrize("path", HOT_PATHS)
def test_a_hot_route_refuses_a_missing_or_wrong_key_with_the_envelope(gateway, path):
    client, _ = gateway
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
        answer = client.post(path, headers=headers, json={"model": "m", "input": "x"})
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["error"]["type"] == "authentication_error"


def test_reloaded_keys_reach_the_hot_routes_and_the_router_alike(gateway):
    client, state = gateway
    reloaded = parse_config({"server": {"api_keys": ["sk-second"]}, "models": []}).server
    for use_keys in state.key_gates:
        use_keys(reloaded)
    for path in ("/v1/chat/completions", "/v1/rerank"):
        old = client.post(path, headers={"Authorization": "Bearer sk-first"}, json={})
        new = client.post(path, headers={"Authorization": "Bearer sk-second"}, json={})
        assert old.status_code == 401, old.text
        # Past the key check, an empty body is the request's own fault.
        assert new.status_code == 400, new.text
        assert new.json()["error"]["type"] == "invalid_request_error"


def test_a_hot_route_answers_bad_input_with_the_envelope(gateway):
    client, _ = gateway
    key = {"Authorization": "Bearer sk-first"}
    not_json = client.post("/v1/chat/completions", headers=key, content=b"{not json")
    assert not_json.status_code == 400 and not_json.json()["error"]["message"]
    unknown = client.post("/v1/embeddings", headers=key, json={"model": "nope", "input": "x"})
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["error"]["code"] == "model_not_found"


def test_other_methods_and_paths_still_get_the_routers_answers(gateway):
    client, _ = gateway
    key = {"Authorization": "Bearer sk-first"}
    wrong_method = client.get("/v1/chat/completions", headers=key)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["message"] == \
        "Method GET is not allowed on /v1/chat/completions"
    unknown = client.post("/v1/chat/complete", headers=key, json={})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "Unknown route POST /v1/chat/complete"


# The dispatcher alone, in front of a toy app, with the access log around it as in the gateway.

async def _on_modelport_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ModelportError)
    return JSONResponse({"error": error.message}, status_code=error.status)


async def _on_unexpected(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"error": "internal"}, status_code=500)


def _toy(endpoint) -> tuple[TestClient, list[AccessRecord]]:  # noqa: ANN001
    async def from_the_app(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"app {request.method}")

    app = Starlette(routes=[Route("/v1/hot", from_the_app, methods=["GET", "POST"]),
                            Route("/v1/other", from_the_app, methods=["POST"])])
    app.state.marker = "the app"
    records: list[AccessRecord] = []
    hot = HotRoutes(app, {"/v1/hot": endpoint}, handlers={ModelportError: _on_modelport_error},
                    unexpected=_on_unexpected, guard=lambda inner: inner)
    return TestClient(AccessLog(hot, observers=[records.append]),
                      raise_server_exceptions=False), records


def test_only_a_post_to_an_exact_hot_path_skips_the_app():
    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"hot, app state {request.app.state.marker}")

    client, _ = _toy(endpoint)
    assert client.post("/v1/hot").text == "hot, app state the app"
    assert client.get("/v1/hot").text == "app GET"
    assert client.post("/v1/other").text == "app POST"


def test_a_typed_error_gets_its_handler_and_an_unexpected_one_a_500_that_is_logged():
    async def typed(request: Request) -> PlainTextResponse:
        raise InvalidRequestError("bad field")

    client, records = _toy(typed)
    answer = client.post("/v1/hot")
    assert (answer.status_code, answer.json()) == (400, {"error": "bad field"})
    assert records[-1].status == 400 and records[-1].note == ""

    async def broken(request: Request) -> PlainTextResponse:
        raise KeyError("bug")

    client, records = _toy(broken)
    answer = client.post("/v1/hot")
    assert (answer.status_code, answer.json()) == (500, {"error": "internal"})
    assert records[-1].status == 500 and records[-1].note == "unhandled_exception"


def test_an_error_after_the_answer_started_sends_nothing_more():
    async def chunks():
        yield b"first "
        raise InvalidRequestError("too late")

    async def streaming(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks(), media_type="text/plain")

    client, records = _toy(streaming)
    answer = client.post("/v1/hot")
    assert answer.status_code == 200 and answer.text == "first "
    assert records[-1].status == 200 and records[-1].note == "unhandled_exception"
