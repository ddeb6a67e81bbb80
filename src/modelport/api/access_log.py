"""One log line per request: method, path, model, status, latency, tokens. No prompt text."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

logger = logging.getLogger("modelport.access")


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

    def take_usage(self, usage: dict | None) -> None:
        if not isinstance(usage, dict):
            return
        self.prompt_tokens = usage.get("prompt_tokens")
        self.completion_tokens = usage.get("completion_tokens")

    def emit(self) -> None:
        latency_ms = (time.perf_counter() - self.started) * 1000
        tokens = (
            f"{self.prompt_tokens or 0}+{self.completion_tokens or 0}"
            if self.prompt_tokens is not None or self.completion_tokens is not None
            else "-"
        )
        logger.info(
            "%s %s model=%s status=%d latency_ms=%.1f tokens=%s%s",
            self.method, self.path, self.model, self.status, latency_ms, tokens,
            f" {self.note}" if self.note else "",
        )
