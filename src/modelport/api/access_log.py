"""One log line per request: method, path, model, status, latency, tokens. No prompt text.

The line is written by an ASGI wrapper around the whole app, once the response is
complete, so that every request gets exactly one line whatever its fate: refused by
auth, an unknown route, an unexpected exception, a stream that ended in an error event
or a client that went away. Handlers only add what they know (model, tokens, a note).
The finished record then goes to the observers (metrics, usage accounting), so each of
them sees exactly the requests the log sees.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelport.errors import ModelportError

logger = logging.getLogger("modelport.access")

SCOPE_KEY = "modelport.access"


@dataclass
class AccessRecord:
    method: str
    path: str
    model: str = "-"
    status: int = 0
    started: float = field(default_factory=time.perf_counter)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    note: str = ""
    error: ModelportError | None = None  # why the request failed, when it did
    streamed: bool = False
    first_byte_s: float | None = None  # of a streamed answer's body: time to first token
    ended: float | None = None
    requested: str | None = None  # the model the request named (by its own name)
    replica: str | None = None  # the replica of the served model that answered
    cached_tokens: int | None = None
    key: Any = None  # the virtual key that sent it (store.keys.VirtualKey), if any
    admission: Any = None  # its limits' hold (limits.admission.Held), settled when done
    # Sent with the answer whatever route or error produced it (the rate-limit headers,
    # which no route sets itself), as ASGI header pairs.
    extra_headers: list[tuple[bytes, bytes]] | None = None

    @property
    def latency_s(self) -> float:
        return (self.ended or time.perf_counter()) - self.started

    def take_usage(self, usage: dict | None) -> None:
        if not isinstance(usage, dict):
            return
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        # Usage comes from upstreams: only numbers go into the log line.
        self.prompt_tokens = prompt if isinstance(prompt, int) else None
        self.completion_tokens = completion if isinstance(completion, int) else None
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
            self.cached_tokens = details["cached_tokens"]

    def emit(self) -> None:
        # Health probes arrive every few seconds from load balancers; they are not traffic.
        level = logging.DEBUG if self.path.startswith("/health") and self.status == 200 \
            else logging.INFO
        if not logger.isEnabledFor(level):
            return
        tokens = (
            f"{self.prompt_tokens or 0}+{self.completion_tokens or 0}"
            if self.prompt_tokens is not None or self.completion_tokens is not None
            else "-"
        )
        line = (f"{self.method} {self.path} model={self.model} status={self.status:d} "
                f"latency_ms={self.latency_s * 1000:.1f} tokens={tokens}"
                f"{f' replica={self.replica}' if self.replica else ''}"
                f"{f' {self.note}' if self.note else ''}")
        # The record is made here rather than by logger.log, which looks up the calling
        # source line on every call: a third of the line's cost, for a location that is
        # always this one.
        logger.handle(logger.makeRecord(logger.name, level, __file__, 0, line, (), None))


def record_of(scope: dict) -> AccessRecord:
    """The request's record (a throwaway one when the app runs without AccessLog)."""
    record = scope.get(SCOPE_KEY)
    if record is None:
        record = scope[SCOPE_KEY] = AccessRecord(scope.get("method", "-"), scope.get("path", "-"))
    return record


Observer = Callable[[AccessRecord], None]
_SSE = b"text/event-stream"


class AccessLog:
    """ASGI wrapper that writes each HTTP request's line when its response is done."""

    def __init__(self, app, observers: Sequence[Observer] = ()) -> None:  # noqa: ANN001
        self.app = app
        self.observers = list(observers)

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = scope[SCOPE_KEY] = AccessRecord(scope["method"], scope["path"])

        async def noting_send(message) -> None:  # noqa: ANN001
            kind = message["type"]
            if kind == "http.response.start":
                record.status = message["status"]
                record.streamed = any(name == b"content-type" and value.startswith(_SSE)
                                      for name, value in message.get("headers", ()))
                extra = record.extra_headers
                if extra:
                    message = {**message, "headers": [*message.get("headers", ()), *extra]}
            elif record.streamed and record.first_byte_s is None and message.get("body"):
                record.first_byte_s = time.perf_counter() - record.started
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        except Exception:
            record.note = record.note or "unhandled_exception"
            if record.status == 0:
                record.status = 500
                raise
            # Starlette has already answered 500 and the error handler logged the
            # traceback; raising further would only make uvicorn log it a second time.
        finally:
            if record.status == 0:  # cancelled before any answer (server stopping)
                record.status, record.note = 499, record.note or "no_response"
            record.ended = time.perf_counter()
            record.emit()
            self._tell_observers(record)

    def _tell_observers(self, record: AccessRecord) -> None:
        for observe in self.observers:
            try:
                observe(record)
            except Exception:  # noqa: BLE001 - accounting must never break a response
                logger.exception("request observer %r failed", observe)

