"""The requests the gateway is answering, so that a shutdown can drain them.

Each request in flight registers something it can be stopped with; on SIGTERM the
server waits for the set to empty (up to `server.drain_timeout_s`) and then stops the
rest, each of which ends its answer properly (an error event and `[DONE]` for a stream,
a 503 for a request still waiting on its upstream).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from modelport.errors import ModelportError, ShuttingDownError

logger = logging.getLogger("modelport.gateway")


class Stoppable(Protocol):
    def stop(self, error: ModelportError) -> None: ...


class InFlight:
    def __init__(self) -> None:
        self._active: set[Stoppable] = set()

    def __len__(self) -> int:
        return len(self._active)

    def add(self, request: Stoppable) -> None:
        self._active.add(request)

    def discard(self, request: Stoppable) -> None:
        self._active.discard(request)

    async def drain(self, timeout: float, forced: Callable[[], bool] = lambda: False) -> int:
        """Wait up to `timeout` s for the requests in flight to finish, then stop the rest.
        Returns how many had to be stopped."""
        count = len(self._active)
        if count:
            logger.info("draining %d request%s (up to %.0f s)", count, "" if count == 1 else "s",
                        timeout)
        deadline = time.monotonic() + timeout
        while self._active and time.monotonic() < deadline and not forced():
            await asyncio.sleep(0.05)
        left = list(self._active)
        if not left:
            if count:
                logger.info("drained: every request finished")
            return 0
        logger.warning("ending %d request%s still running after the drain period",
                       len(left), "" if len(left) == 1 else "s")
        for request in left:
            request.stop(ShuttingDownError(
                "the server is shutting down and this request did not finish within "
                f"{timeout:.0f} s (server.drain_timeout_s); retry it",
                headers={"Retry-After": "5"}))
        # Let the stopped requests send their endings before connections are closed.
        deadline = time.monotonic() + 2.0
        while self._active and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return len(left)
