"""The primary's followers: started with the gateway, restarted when one dies, replaced
after a reload, stopped with the gateway (draining, like the primary itself)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from modelport.api.state import GatewayState
from modelport.processes.control import ControlServer
from modelport.workers.listeners import listens
from modelport.processes.wire import CONTROL_SECRET_ENV, CONTROL_URL_ENV, PROCESS_INDEX_ENV
from modelport.workers.lifetime import die_with_parent

logger = logging.getLogger("modelport.processes")

_BACKOFF_START_S = 1.0
_BACKOFF_MAX_S = 30.0
_STABLE_AFTER_S = 60.0
_SYNC_WAIT_S = 60.0  # a replacement's first sync, before the process it replaces goes
_STOP_GRACE_S = 10.0  # past the drain: closing connections, the database, the store


@dataclass(eq=False)
class Follower:
    index: int
    process: asyncio.subprocess.Process | None = None
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    retired: bool = False
    task: asyncio.Task | None = None

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.returncode is None:
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass


class GatewayProcesses:
    """`count - 1` followers of this process, each `modelport <argv>` again."""

    def __init__(self, state: GatewayState, count: int, argv: list[str],
                 config_text: Callable[[], str]) -> None:
        self._state = state
        self._count = count
        self._argv = argv
        # The config file's text as last read, and as it was when it was last applied
        # (at the start and after each successful reload): what every follower runs,
        # even one restarted after the file was edited but not yet reloaded.
        self._read_text = config_text
        self._text = b""
        self.control = ControlServer(state, self._synced)
        self._followers: list[Follower] = []
        self._stopping = False
        self._replacing: asyncio.Task | None = None
        self._all_listened = False
        state.all_listening = self.listening

    async def start(self) -> None:
        self._text = self._read_text().encode()
        await self.control.start()
        for index in range(1, self._count):
            self._add(index)

    def listening(self) -> bool:
        """Whether the followers started with this process all listen on the gateway's
        port (then for good: a follower restarted or replaced later must not make the
        primary look unready while it serves). Until they do, every new connection goes
        to the primary and, kept alive, stays there."""
        if not self._all_listened:
            port = self._state.config.server.port
            self._all_listened = all(
                follower.process is not None and listens(follower.process.pid, port)
                for follower in self._followers if not follower.retired)
        return self._all_listened

    def forward(self, sig: int) -> None:
        """The gateway got a stop signal: its followers get the same (called from the
        signal handler, so that they drain while it does; a second Ctrl-C forces)."""
        self._stopping = True
        for follower in self._followers:
            follower.signal(sig)

    async def stop(self) -> None:
        """Stop every follower (SIGTERM unless signalled already); returns once they are
        gone (past the drain period and a grace, they are killed)."""
        if not self._stopping:
            self.forward(signal.SIGTERM)
        if self._replacing is not None:
            self._replacing.cancel()
        for follower in self._followers:  # waiting to be restarted: nothing to stop
            if follower.task is not None and (follower.process is None
                                              or follower.process.returncode is not None):
                follower.task.cancel()
        tasks = [f.task for f in self._followers if f.task is not None]
        limit = self._state.config.server.drain_timeout_s + _STOP_GRACE_S
        _, pending = await asyncio.wait(tasks, timeout=limit) if tasks else (set(), set())
        if pending:
            logger.warning("%d gateway process(es) still running %.0f s after the stop; "
                           "killing them", len(pending), limit)
            for follower in self._followers:
                follower.signal(signal.SIGKILL)
            await asyncio.gather(*pending, return_exceptions=True)
        await self.control.stop()
        logger.info("all gateway processes stopped")

    def replace(self) -> None:
        """After a reload: new followers start from the new file; once each has its first
        replica table, the one it replaces drains and exits."""
        if self._stopping:
            return
        self._text = self._read_text().encode()
        if self._replacing is not None:
            self._replacing.cancel()
        self._replacing = asyncio.create_task(self._replace())

    async def _replace(self) -> None:
        old = [f for f in self._followers if not f.retired]
        fresh = [self._add(f.index) for f in old]
        try:
            await asyncio.wait_for(asyncio.gather(*(f.synced.wait() for f in fresh)),
                                   _SYNC_WAIT_S)
        except asyncio.TimeoutError:
            logger.warning("new gateway processes not serving after %.0f s; the old ones "
                           "are stopped anyway", _SYNC_WAIT_S)
        for follower in old:
            follower.retired = True
            follower.signal(signal.SIGTERM)

    def _add(self, index: int) -> Follower:
        follower = Follower(index)
        follower.task = asyncio.create_task(self._keep_running(follower))
        follower.task.add_done_callback(lambda _: self._followers.remove(follower))
        self._followers.append(follower)
        return follower

    def _synced(self, pid: int) -> None:
        for follower in self._followers:
            if follower.process is not None and follower.process.pid == pid:
                follower.synced.set()

    async def _keep_running(self, follower: Follower) -> None:
        delay = _BACKOFF_START_S
        while not self._stopping and not follower.retired:
            env = {**os.environ, CONTROL_URL_ENV: self.control.url,
                   CONTROL_SECRET_ENV: self.control.secret,
                   PROCESS_INDEX_ENV: str(follower.index)}
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "modelport", *self._argv, env=env,
                    stdin=asyncio.subprocess.PIPE,
                    # Its own session: a Ctrl-C in the terminal reaches only this process,
                    # which passes the stop on (so a second one can force it).
                    start_new_session=True, preexec_fn=die_with_parent)
            except OSError as error:
                logger.error("gateway process %d: cannot start: %s", follower.index, error)
                return
            follower.process = process
            if self._stopping or follower.retired:  # told to stop while it was starting
                follower.signal(signal.SIGTERM)
            await _hand_over(process, self._text)
            started = time.monotonic()
            logger.info("gateway process %d started (pid %d)", follower.index, process.pid)
            code = await process.wait()
            self.control.forget(process.pid)
            if self._stopping or follower.retired:
                logger.info("gateway process %d (pid %d) stopped", follower.index, process.pid)
                return
            uptime = time.monotonic() - started
            if uptime > _STABLE_AFTER_S:
                delay = _BACKOFF_START_S
            logger.warning("gateway process %d (pid %d) exited with code %s after %.1f s; "
                           "restarting in %.0f s", follower.index, process.pid, code, uptime,
                           delay)
            follower.synced.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)


async def _hand_over(process: asyncio.subprocess.Process, text: bytes) -> None:
    """Write the config text to a new follower's stdin and close it."""
    assert process.stdin is not None
    try:
        process.stdin.write(text)
        await process.stdin.drain()
        process.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # it died at once: its exit is reported like any other
