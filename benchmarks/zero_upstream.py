#!/usr/bin/env python
"""A zero-delay OpenAI-compatible upstream for measuring gateway overhead.

A bare asyncio HTTP/1.1 server (keep-alive, Content-Length bodies) that answers
POST /v1/chat/completions at once: a canned completion, or a canned SSE stream of
--chunks events when the body asks for "stream": true. It does no JSON parsing, so it
costs as little as possible and the measurement is of what sits in front of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

COMPLETION = json.dumps({
    "id": "chatcmpl-zero", "object": "chat.completion", "created": 0, "model": "zero",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Hello from the zero upstream."}}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
}).encode()


def stream_body(chunks: int) -> bytes:
    events = []
    for i in range(chunks):
        events.append(b'data: {"id":"chatcmpl-zero","object":"chat.completion.chunk","created":0,'
                      b'"model":"zero","choices":[{"index":0,"delta":{"content":"tok' +
                      str(i).encode() + b' "},"finish_reason":null}]}\n\n')
    events.append(b'data: {"id":"chatcmpl-zero","object":"chat.completion.chunk","created":0,'
                  b'"model":"zero","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":' +
                  str(chunks).encode() + b',"total_tokens":' + str(chunks + 5).encode() + b'}}\n\n')
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


class ZeroProtocol(asyncio.Protocol):
    def __init__(self, stream: bytes) -> None:
        self.buffer = b""
        self.stream = stream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].lower()
            length = 0
            marker = head.find(b"content-length:")
            if marker >= 0:
                length = int(head[marker + 15:head.find(b"\r\n", marker) if head.find(b"\r\n", marker) > 0 else None])
            if len(self.buffer) < head_end + 4 + length:
                return
            body = self.buffer[head_end + 4:head_end + 4 + length]
            self.buffer = self.buffer[head_end + 4 + length:]
            self.respond(head, body)

    def respond(self, head: bytes, body: bytes) -> None:
        if head.startswith(b"get"):
            payload, kind = b'{"status":"ok"}', b"application/json"
        elif b'"stream":true' in body or b'"stream": true' in body:
            payload, kind = self.stream, b"text/event-stream"
        else:
            payload, kind = COMPLETION, b"application/json"
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + kind +  # type: ignore[attr-defined]
                             b"\r\nContent-Length: " + str(len(payload)).encode() +
                             b"\r\nConnection: keep-alive\r\n\r\n" + payload)


async def serve(port: int, chunks: int) -> None:
    loop = asyncio.get_running_loop()
    body = stream_body(chunks)
    server = await loop.create_server(lambda: ZeroProtocol(body), "127.0.0.1", port, backlog=1024,
                                      reuse_port=True)
    print(f"zero upstream on http://127.0.0.1:{port}/v1 (pid {os.getpid()})", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=20, help="events in a streamed answer")
    parser.add_argument("--processes", type=int, default=1,
                        help="processes sharing the port (SO_REUSEPORT), for many-core machines")
    args = parser.parse_args()
    children: list[int] = []
    for _ in range(args.processes - 1):
        child = os.fork()
        if child == 0:
            children = []
            break
        children.append(child)

    def stop(*_: object) -> None:  # the first process stops the others with itself
        for child in children:
            os.kill(child, signal.SIGTERM)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.port, args.chunks))


if __name__ == "__main__":
    main()
