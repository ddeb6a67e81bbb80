"""An OpenAI-compatible server on loopback that says who it is and counts what it gets,
for routing tests: its answers name it, and its behaviour can be switched while it runs.

Modes: "ok" (answers; a stream sends `max_tokens` events, else `ticks`, `tick_s` apart),
"fail" (HTTP 500),
"stall" (a stream sends one event and then nothing, a plain request never gets its
answer). GET /health answers 200 in every mode, as a worker whose engine hangs would.
"""

from __future__ import annotations

import asyncio
import threading

import orjson
from aiohttp import web

from support.server import free_port


def _chunk(text: str) -> bytes:
    event = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "fake",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + orjson.dumps(event) + b"\n\n"


class CountingUpstream:
    def __init__(self, name: str, *, ticks: int = 5, tick_s: float = 0.05) -> None:
        self.name = name
        self.port = free_port()
        self.mode = "ok"
        self.ticks = ticks
        self.tick_s = tick_s
        self.requests = 0  # chat completions received
        self.open_streams = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

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
            await response.write(_chunk(f"from {self.name}"))
            if mode == "stall":
                await asyncio.Event().wait()  # the connection stays open, nothing comes
            for _ in range(body.get("max_tokens") or self.ticks):
                await asyncio.sleep(self.tick_s)
                await response.write(_chunk("."))
            await response.write(b"data: [DONE]\n\n")
        finally:
            self.open_streams -= 1
        return response

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/health", self._health)
        runner = web.AppRunner(app, handler_cancellation=True)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._started.set()
        self._loop.run_forever()

    def start(self) -> "CountingUpstream":
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
