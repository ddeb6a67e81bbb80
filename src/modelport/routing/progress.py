"""Progress of the answers under way on a replica, so that a stuck replica is noticed.

A stream's clock starts with its first event: the silence before it is the prompt being
read (and the request waiting for a free slot inside the engine), which grows with the
prompt and the queue, so it is legitimate and left to the model's read timeout. After the
first event the replica owes a steady flow of tokens. The relay marks when it last
started waiting on the replica for the next event (`waiting_since`; 0 while it is not
waiting: before the first event, and while the client is still taking the previous one,
since a slow client is not a stuck replica).

A worker of ours also owes answers to its health probes (`Replica.answered_at`): when
neither those nor any stream's bytes came for the stall timeout, it is stuck too
(stopped, hung), whatever its requests were doing. The stall watch reads these marks a
few times per second; nothing here sets a timer per request or per chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from modelport.errors import ModelportError


class StreamProgress:
    """One started stream on a replica: since when the relay has been waiting on it, and
    how to end it (set once the response exists)."""

    __slots__ = ("waiting_since", "stop")

    def __init__(self) -> None:
        self.waiting_since = 0.0
        self.stop: Callable[[ModelportError], None] | None = None


class PendingAnswer:
    """A request sent to a replica that has no answer yet (nor the start of its stream),
    registered on the replica while it waits. `stop` ends the wait with an error, which
    the failover takes like any failure of the replica: the request goes to the next
    replica, or the client gets the error. Built on asyncio.timeout, which tells this
    stop apart from the client leaving or a shutdown cancelling the request."""

    __slots__ = ("_replica", "_timeout", "error")

    def __init__(self, replica: Any) -> None:
        self._replica = replica
        self._timeout = asyncio.timeout(None)
        self.error: ModelportError | None = None

    async def __aenter__(self) -> "PendingAnswer":
        await self._timeout.__aenter__()
        self._replica.pending.add(self)
        return self

    async def __aexit__(self, kind: Any, error: Any, traceback: Any) -> bool | None:
        self._replica.pending.discard(self)
        try:
            return await self._timeout.__aexit__(kind, error, traceback)
        except TimeoutError:
            if self.error is None:
                raise
            raise self.error from None

    def stop(self, error: ModelportError) -> None:
        if self.error is None:
            self.error = error
            self._timeout.reschedule(asyncio.get_running_loop().time())


def silence(streams: Iterable[StreamProgress], now: float, timeout: float) -> float | None:
    """How long a replica has kept its started streams waiting, when that makes it
    stuck: some stream has waited `timeout` or longer and none has waited less (a stream
    that got bytes lately shows the replica is working; only that other one is slow).
    None when the replica is not stuck."""
    longest = 0.0
    for stream in streams:
        since = stream.waiting_since
        if not since:
            continue
        waited = now - since
        if waited < timeout:
            return None
        longest = max(longest, waited)
    return longest or None


def last_sign_of_life(answered_at: float, streams: Iterable[StreamProgress]) -> float:
    """When a worker last proved alive: its last answered health probe, or the last bytes
    a stream got from it (the start of the stream's wait on it), whichever came later."""
    last = answered_at
    for stream in streams:
        last = max(last, stream.waiting_since)
    return last


def stall_timeout(model: Any, server: Any) -> float:
    """The model's `stall_timeout_s`, else the server's `worker_stall_timeout_s`."""
    return getattr(model, "stall_timeout_s", None) or server.worker_stall_timeout_s
