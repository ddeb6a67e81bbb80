"""A keep-alive connection the server drops (as llama.cpp's server does after a few
requests) is resent once on a fresh connection instead of failing the request."""

from __future__ import annotations

import asyncio

from modelport.providers.upstream import UpstreamClient

REPLY = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n"
         b"Connection: keep-alive\r\n\r\n{\"ok\":true}")


class OneRequestPerConnection(asyncio.Protocol):
    """Answers the first request on a connection; drops the connection on the second."""

    def __init__(self, seen: list[int]) -> None:
        self.answered = False
        self.seen = seen

    def connection_made(self, transport):  # noqa: ANN001
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" not in data:
            return
        self.seen.append(1)
        if self.answered:
            self.transport.close()
        else:
            self.answered = True
            self.transport.write(REPLY)


def test_dropped_keepalive_connection_is_resent():
    async def scenario() -> tuple[list[int], list[int]]:
        seen: list[int] = []
        server = await asyncio.get_running_loop().create_server(
            lambda: OneRequestPerConnection(seen), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = UpstreamClient(f"http://127.0.0.1:{port}/v1", label="worker")
        statuses = []
        try:
            for _ in range(3):
                statuses.append((await client.post("/chat/completions", b"{}")).status)
            stream = await client.open_stream("/chat/completions", b"{}")
            statuses.append(stream.status)
            stream.release()
        finally:
            await client.close()
            server.close()
        return statuses, seen

    statuses, seen = asyncio.run(scenario())
    assert statuses == [200, 200, 200, 200]
    # Requests reusing a pooled connection were dropped and resent on a new one.
    assert len(seen) > len(statuses)
