"""An aiohttp app served from a background thread of the test process on a free port: the
base of the fake OpenAI-compatible upstreams that tests point modelport at."""

from __future__ import annotations

import asyncio
import threading
from typing import Self

import orjson
from aiohttp import web

from support.server import free_port


def content_chunk(text: str) -> bytes:
    """One SSE event of a streamed chat completion that carries `text`."""
    event = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "fake",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + orjson.dumps(event) + b"\n\n"


class ThreadedApp:
    # True: a handler is cancelled when its client goes away, as a real server's work is.
    handler_cancellation = False

    def __init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def make_app(self) -> web.Application:
        """The app with its routes."""
        raise NotImplementedError

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self.make_app(), handler_cancellation=self.handler_cancellation)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._started.set()
        self._loop.run_forever()

    def start(self) -> Self:
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        # A handler still running (a slow answer) is dropped with the loop: the thread is a
        # daemon.
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
