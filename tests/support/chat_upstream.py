"""An OpenAI-compatible upstream that streams on demand, for driving `modelport chat`.

It records every request's messages and notices when a client drops a stream, so a test
can tell what reached the model and whether an interrupted answer was really stopped.
"""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from support.threaded_app import ThreadedApp, content_chunk

ENDLESS = "forever"  # a message containing this gets an answer that never ends


class ChatUpstream(ThreadedApp):
    handler_cancellation = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[list[dict]] = []
        self.dropped = threading.Event()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        messages = body["messages"]
        self.requests.append(messages)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if ENDLESS in messages[-1]["content"]:
            try:
                while True:
                    await response.write(content_chunk("tick "))
                    await asyncio.sleep(0.05)
            except (ConnectionError, asyncio.CancelledError):
                self.dropped.set()
                raise
        await response.write(content_chunk(f"pong ({len(messages)} messages)"))
        await response.write(b"data: [DONE]\n\n")
        return response

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        return app
