"""An OpenAI-compatible upstream that streams on demand, for driving `modelport chat`.

It records every request's messages and notices when a client drops a stream, so a test
can tell what reached the model and whether an interrupted answer was really stopped.
"""

from __future__ import annotations

import asyncio
import threading

import orjson
from aiohttp import web

from support.server import free_port

ENDLESS = "forever"  # a message containing this gets an answer that never ends


def _chunk(text: str) -> bytes:
    event = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "fake",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + orjson.dumps(event) + b"\n\n"


class ChatUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[list[dict]] = []
        self.dropped = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        messages = body["messages"]
        self.requests.append(messages)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if ENDLESS in messages[-1]["content"]:
            try:
                while True:
                    await response.write(_chunk("tick "))
                    await asyncio.sleep(0.05)
            except (ConnectionError, asyncio.CancelledError):
                self.dropped.set()
                raise
        await response.write(_chunk(f"pong ({len(messages)} messages)"))
        await response.write(b"data: [DONE]\n\n")
        return response

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app, handler_cancellation=True)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._started.set()
        self._loop.run_forever()

    def start(self) -> "ChatUpstream":
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
