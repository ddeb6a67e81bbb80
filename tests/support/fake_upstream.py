"""A misbehaving OpenAI-compatible upstream on loopback: slow, broken mid-stream, erroring."""

from __future__ import annotations

import asyncio

from aiohttp import web

from support.threaded_app import ThreadedApp


def _chunk(text: str) -> bytes:
    return (
        b'data: {"id":"x","object":"chat.completion.chunk","created":0,"model":"fake",'
        b'"choices":[{"index":0,"delta":{"content":"' + text.encode() + b'"},'
        b'"finish_reason":null}]}\n\n'
    )


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(30)
    return web.json_response({})


async def _broken_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(_chunk("partial"))
    await asyncio.sleep(0.05)
    # Drop the connection without [DONE], as a crashing upstream would.
    request.transport.close()
    return response


async def _rate_limited(request: web.Request) -> web.Response:
    return web.json_response(
        {"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit"}},
        status=429, headers={"Retry-After": "7"},
    )


async def _echo_model(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "auth=" +
                                 request.headers.get("Authorization", "none")}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    })


async def _llamacpp_rerank(request: web.Request) -> web.Response:
    """/rerank in llama.cpp's dialect (no id, no documents), scoring by words in common;
    documents must arrive as plain strings, the one form llama.cpp reads."""
    body = await request.json()
    query = set(body["query"].lower().split())
    scores = [len(query & set(document.lower().split())) / (1 + len(query))
              for document in body["documents"]]  # a dict here fails with a 500, as llama.cpp
    results = [{"index": i, "relevance_score": score} for i, score in enumerate(scores)]
    return web.json_response({"model": body["model"], "object": "list", "results": results,
                              "usage": {"prompt_tokens": 7, "total_tokens": 7}})


class FakeUpstream(ThreadedApp):
    """Runs in a background thread; base URLs: /slow/v1, /broken/v1, /limited/v1, /echo/v1."""

    def url(self, mode: str) -> str:  # type: ignore[override]  # one URL per behaviour
        return f"http://127.0.0.1:{self.port}/{mode}/v1"

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/slow/v1/chat/completions", _slow)
        app.router.add_post("/broken/v1/chat/completions", _broken_stream)
        app.router.add_post("/limited/v1/chat/completions", _rate_limited)
        app.router.add_post("/echo/v1/chat/completions", _echo_model)
        app.router.add_post("/echo/v1/rerank", _llamacpp_rerank)
        return app
