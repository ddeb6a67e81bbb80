"""Running the gateway under uvicorn with a draining shutdown.

On SIGTERM or Ctrl-C the gateway stops accepting connections, lets the requests in
flight finish for up to `server.drain_timeout_s`, ends the rest properly (an error event
and `[DONE]` for streams, a 503 for the others), stops its workers and exits 0. A second
Ctrl-C or SIGTERM ends the drain at once (the workers are still stopped), a third
stops without that. SIGHUP reloads the configuration file (reload.py).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
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
                 on_hangup: Callable[[], None] | None = None,
                 on_stop_signal: Callable[[int], None] | None = None):
        super().__init__(config)
        self.in_flight = in_flight
        self.drain_timeout_s = drain_timeout_s
        self.on_hangup = on_hangup
        self.on_stop_signal = on_stop_signal
        self.hurry = False  # a second stop signal: the drain ends at once

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
        if self.should_exit:
            # A second SIGTERM is an operator (or a supervisor) insisting, as a second
            # Ctrl-C is: the drain ends now, requests still running end as past it, and
            # the shutdown still stops the workers and writes the usage rows. Only a
            # third skips that too (uvicorn's force_exit leaves the lifespan unfinished).
            if self.hurry:
                self.force_exit = True
                return
            logger.warning("second %s: stopping without waiting for requests",
                           signal.Signals(sig).name)
            self.hurry = True
            return
        super().handle_exit(sig, frame)
        if self.on_stop_signal is not None:
            self.on_stop_signal(sig)

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
        await self.in_flight.drain(self.drain_timeout_s,
                                   forced=lambda: self.hurry or self.force_exit)
        await super().shutdown(sockets)


def run_gateway(app, host: str, port: int, in_flight: InFlight, drain_timeout_s: float,  # noqa: ANN001
                on_hangup: Callable[[], None] | None = None, shared_port: bool = False,
                on_stop_signal: Callable[[int], None] | None = None) -> bool:
    """Serve `app` until a stop signal (SIGHUP calls `on_hangup`, a stop signal also
    `on_stop_signal`); False when the server could not start. `shared_port`: bind with
    SO_REUSEPORT, so that the other gateway processes of this machine take connections
    on the same port (the kernel spreads new connections over them)."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, loop="uvloop",
        http="httptools", lifespan="on", timeout_graceful_shutdown=_CLOSE_GRACE_S,
    )
    server = DrainingServer(config, in_flight, drain_timeout_s, on_hangup, on_stop_signal)
    if not shared_port:
        server.run()
        return server.started
    try:
        sock = shared_port_socket(host, port)
    except OSError as error:
        logger.error("cannot listen on %s:%d: %s", host, port, error)
        return False
    # Bound, but listening only once the app has started (uvicorn's startup): until then
    # the kernel gives this port's connections to the processes already serving.
    server.run(sockets=[sock])
    return server.started


def shared_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with SO_REUSEPORT (not yet listening)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
