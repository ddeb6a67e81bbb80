"""An OpenAI-compatible server on loopback that says who it is and counts what it gets,
for routing tests: its answers name it, and its behaviour can be switched while it runs.

Modes: "ok" (answers; a stream sends `max_tokens` events, else `ticks`, `tick_s` apart),
"fail" (HTTP 500),
"stall" (a stream sends one event and then nothing, a plain request never gets its
answer). GET /health answers 200 in every mode, as a worker whose engine hangs would.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from aiohttp import web

from support.threaded_app import ThreadedApp, content_chunk


class CountingUpstream(ThreadedApp):
    handler_cancellation = True

    def __init__(self, name: str, *, ticks: int = 5, tick_s: float = 0.05) -> None:
        super().__init__()
        self.name = name
        self.mode = "ok"
        self.ticks = ticks
        self.tick_s = tick_s
        self.requests = 0  # chat completions received
        self.open_streams = 0

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests += 1
        mode = self.mode
        if mode == "fail":
            return web.json_response({"error": {"message": f"{self.name} is failing",
                                                 "type": "server_error"}}, status=500)
        if not body.get("stream"):
            if mode == "stall":
                await asyncio.Event().wait()
            return web.json_response({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f"from {self.name}"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        self.open_streams += 1
        try:
            await response.write(content_chunk(f"from {self.name}"))
            if mode == "stall":
                await asyncio.Event().wait()  # the connection stays open, nothing comes
            for _ in range(body.get("max_tokens") or self.ticks):
                await asyncio.sleep(self.tick_s)
                await response.write(content_chunk("."))
            await response.write(b"data: [DONE]\n\n")
        finally:
            self.open_streams -= 1
        return response

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/health", self._health)
        return app


def plain_chat(base_url: str, model: str) -> httpx.Response:
    """One non-streamed chat through a gateway (its /v1 base URL)."""
    return httpx.post(base_url + "/chat/completions", timeout=30, json={
        "model": model, "messages": [{"role": "user", "content": "Hi"}]})


def answerer(answer: httpx.Response) -> str:
    """The name of the CountingUpstream that wrote a 200 answer ("from X....")."""
    assert answer.status_code == 200, answer.text
    return answer.json()["choices"][0]["message"]["content"].removeprefix("from ").rstrip(".")


def replica_of(health: dict[str, Any], model: str, upstream: CountingUpstream) -> dict:
    """The model's replica at `upstream`, as a gateway's /health shows it."""
    return next(r for r in health["models"][model]["replicas"] if r["url"] == upstream.url)
