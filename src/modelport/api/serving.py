"""Running the gateway under uvicorn with a draining shutdown.

On SIGTERM or Ctrl-C the gateway stops accepting connections, lets the requests in
flight finish for up to `server.drain_timeout_s`, ends the rest properly (an error event
and `[DONE]` for streams, a 503 for the others), stops its workers and exits 0. A second
Ctrl-C stops at once. SIGHUP reloads the configuration file (reload.py).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Generator
from types import FrameType

import uvicorn

from modelport.api.inflight import InFlight

logger = logging.getLogger("modelport.gateway")

# After the drain, connections only need to flush what was just written to them.
_CLOSE_GRACE_S = 5.0


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, in_flight: InFlight, drain_timeout_s: float,
                 on_hangup: Callable[[], None] | None = None):
        super().__init__(config)
        self.in_flight = in_flight
        self.drain_timeout_s = drain_timeout_s
        self.on_hangup = on_hangup

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises the signal after its shutdown, which makes a clean drain exit
        # with -15; a drained stop is a normal exit here.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handlers = {sig: self.handle_exit for sig in (signal.SIGINT, signal.SIGTERM)}
        handlers[signal.SIGHUP] = self._on_hangup
        original = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            logger.warning("second interrupt: stopping without waiting for requests")
        super().handle_exit(sig, frame)

    def _on_hangup(self, sig: int, frame: FrameType | None) -> None:
        if self.on_hangup is None:
            logger.warning("SIGHUP received and ignored: this server runs the built-in "
                           "config, there is no file to reload")
            return
        logger.info("SIGHUP received: reloading the config")
        self.on_hangup()

    async def shutdown(self, sockets: list | None = None) -> None:
        for server in self.servers:
            server.close()  # stop accepting before draining, so the drain can end
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle keep-alive connections close; busy ones after the answer
        await self.in_flight.drain(self.drain_timeout_s, forced=lambda: self.force_exit)
        await super().shutdown(sockets)


def run_gateway(app, host: str, port: int, in_flight: InFlight, drain_timeout_s: float,  # noqa: ANN001
                on_hangup: Callable[[], None] | None = None) -> bool:
    """Serve `app` until a stop signal (SIGHUP calls `on_hangup`); False when the server
    could not start."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, loop="uvloop",
        http="httptools", lifespan="on", timeout_graceful_shutdown=_CLOSE_GRACE_S,
    )
    server = DrainingServer(config, in_flight, drain_timeout_s, on_hangup)
    server.run()
    return server.started
