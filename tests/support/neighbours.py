"""Keys sharing one model through a real gateway: a flood that keeps many requests in flight
for one key, and one-at-a-time requests of another whose time to first token is measured.
Used by the scheduling e2e tests and benchmarks/fairness.py."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import httpx

# A prompt the small models answer at length; with ignore_eos every answer is max_tokens long,
# so each request of a kind costs the same.
LONG_PROMPT = "Count from one to two hundred, one number per line."
SHORT_PROMPT = "Say hello."


def chat_body(model: str, max_tokens: int, prompt: str = LONG_PROMPT, stream: bool = False,
              **fields) -> dict:
    return {"model": model, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": stream, "messages": [{"role": "user", "content": prompt}], **fields}


def client(base_url: str, secret: str | None, connections: int = 64) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return httpx.AsyncClient(base_url=base_url, timeout=300, headers=headers,
                             limits=httpx.Limits(max_connections=connections))


async def first_token_s(http: httpx.AsyncClient, body: dict,
                        headers: dict | None = None) -> tuple[float, dict]:
    """Seconds from sending a streamed request to its first event, and its response headers."""
    started = time.perf_counter()
    async with http.stream("POST", "/chat/completions", json={**body, "stream": True},
                           headers=headers) as response:
        assert response.status_code == 200, (await response.aread())[:500]
        first = None
        async for line in response.aiter_lines():
            if first is None and line.startswith("data:"):
                first = time.perf_counter() - started
    assert first is not None, "the stream ended without an event"
    return first, dict(response.headers)


async def complete_s(http: httpx.AsyncClient, body: dict) -> float:
    started = time.perf_counter()
    response = await http.post("/chat/completions", json={**body, "stream": False})
    assert response.status_code == 200, response.text[:500]
    return time.perf_counter() - started


@dataclass
class Flood:
    """Keeps `depth` requests of `body` in flight (each answered one replaced at once)
    until stopped; `done` holds when each was answered."""

    http: httpx.AsyncClient
    body: dict
    depth: int
    done: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    def start(self) -> "Flood":
        self._tasks = [asyncio.ensure_future(self._loop()) for _ in range(self.depth)]
        return self

    async def _loop(self) -> None:
        while True:
            response = await self.http.post("/chat/completions", json=self.body)
            if response.status_code != 200:
                self.failures.append(response.text[:300])
                await asyncio.sleep(0.5)  # a refusal is no answer: not counted, not hammered
                continue
            self.done.append(time.perf_counter())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def rate(self, answers: int, skip: int = 2) -> float:
        """Answers per second over the next `answers` after `skip` more (the pipeline
        filling), timed between answers so that partial requests do not count."""
        first = len(self.done) + skip
        while len(self.done) < first + answers + 1:
            await asyncio.sleep(0.05)
        window = self.done[first:first + answers + 1]
        return (len(window) - 1) / (window[-1] - window[0])


async def closed_loop_rate(http: httpx.AsyncClient, body: dict, depth: int,
                           answers: int) -> float:
    """Answers per second with exactly `depth` requests in flight, nothing queued."""
    flood = Flood(http, body, depth).start()
    try:
        return await flood.rate(answers)
    finally:
        await flood.stop()


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]
