from __future__ import annotations

import orjson

from modelport.errors import (
    ContextLengthError,
    InvalidRequestError,
    ModelNotReadyError,
    UpstreamError,
    normalize_upstream_error,
)


def test_envelope_has_the_four_openai_fields():
    error = ModelNotReadyError("loading", headers={"Retry-After": "3"})
    assert error.envelope() == {"error": {"message": "loading", "type": "service_unavailable",
                                          "param": None, "code": "model_not_ready"}}
    assert error.status == 503


def test_llamacpp_context_error_becomes_context_length_exceeded():
    error = normalize_upstream_error(400, b'{"error":{"code":400,"message":"too long",'
                                          b'"type":"exceed_context_size_error"}}')
    assert isinstance(error, ContextLengthError)
    assert error.code == "context_length_exceeded" and error.message == "too long"


def test_openai_error_keeps_status_message_and_code():
    error = normalize_upstream_error(429, b'{"error":{"message":"slow","type":"rate_limit_error",'
                                          b'"code":"rate_limit_exceeded","param":null}}')
    assert isinstance(error, UpstreamError)
    assert (error.status, error.message, error.type, error.code) == (
        429, "slow", "rate_limit_error", "rate_limit_exceeded")


def test_non_json_and_integer_codes_are_normalized():
    error = normalize_upstream_error(503, b"<html>Bad gateway</html>")
    assert error.status == 503 and "Bad gateway" in error.message
    error = normalize_upstream_error(400, b'{"error":{"code":400,"message":"bad"}}')
    assert isinstance(error, InvalidRequestError) and error.code is None


def test_a_5xx_that_names_the_request_invalid_is_the_clients_400():
    # llama.cpp's answer to token ids outside the vocabulary
    error = normalize_upstream_error(500, b'{"error":{"code":500,"message":"Prompt contains '
                                          b'invalid tokens","type":"invalid_request_error"}}')
    assert isinstance(error, InvalidRequestError)
    assert (error.status, error.message) == (400, "Prompt contains invalid tokens")
    assert normalize_upstream_error(500, b'{"error":{"message":"boom","type":"server_error"}}'
                                    ).status == 500


def test_error_http_is_the_status_headers_and_envelope_of_an_error():
    from modelport.errors import error_http

    status, headers, body = error_http(ModelNotReadyError("loading", headers={"Retry-After": "3"}))
    assert status == 503
    assert headers == {"content-type": "application/json", "Retry-After": "3"}
    assert orjson.loads(body) == ModelNotReadyError("loading").envelope()
    # another API's shape of the same error (Anthropic's) keeps the status and headers
    status, _, body = error_http(InvalidRequestError("bad"), {"type": "error"})
    assert (status, body) == (400, b'{"type":"error"}')


def test_send_error_answers_raw_asgi_with_the_same_bytes():
    import asyncio

    from modelport.errors import AuthenticationError, error_http, send_error

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    error = AuthenticationError("no key", headers={"WWW-Authenticate": "Bearer"})
    asyncio.run(send_error(send, error))
    start, body = sent
    assert start["status"] == 401
    assert (b"www-authenticate", b"Bearer") in start["headers"]
    assert (b"content-type", b"application/json") in start["headers"]
    assert body["body"] == error_http(error)[2]
