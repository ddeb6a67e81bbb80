"""On-demand models taking turns through a real gateway: bursts of requests alternating
between models, each burst starting before the one before it has ended, and the loads
that cost. Used by tests/e2e/test_residency.py and benchmarks/residency.py."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from support.models import SMOLLM2


def on_demand_models(names: list[str], context_length: int, parallel: int) -> list[dict]:
    """The same small GGUF model served under several names, each loaded on demand."""
    return [{"name": name, "engine": "llamacpp", "path": SMOLLM2, "load": "on_demand",
             "context_length": context_length, "parallel": parallel, "threads": 1}
            for name in names]


@dataclass
class Answer:
    model: str
    status: int
    seconds: float
    # Whether the answer is whole: `max_tokens` tokens of text, ended for its length.
    complete: bool
    detail: str = ""


@dataclass
class BurstRun:
    answers: list[Answer] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def cut(self) -> list[Answer]:
        return [a for a in self.answers if a.status != 200 or not a.complete]


async def alternate_bursts(base_url: str, models: list[str], rounds: int, clients: int,
                           per_client: int, gap_s: float, max_tokens: int) -> BurstRun:
    """`rounds` times over `models`: a burst of `clients` clients, each sending
    `per_client` requests to the model one after another, then `gap_s` later the next
    model's burst, without waiting for the earlier bursts to end."""
    run = BurstRun()
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=300,
                                 limits=httpx.Limits(max_connections=256)) as http:
        bursts = []
        for _ in range(rounds):
            for model in models:
                bursts += [asyncio.create_task(_one_client(http, model, per_client, max_tokens))
                           for _ in range(clients)]
                await asyncio.sleep(gap_s)
        run.answers = [answer for answers in await asyncio.gather(*bursts)
                       for answer in answers]
    run.seconds = time.perf_counter() - started
    return run


async def _one_client(http: httpx.AsyncClient, model: str, requests: int,
                      max_tokens: int) -> list[Answer]:
    return [await _ask(http, model, max_tokens) for _ in range(requests)]


async def _ask(http: httpx.AsyncClient, model: str, max_tokens: int) -> Answer:
    started = time.perf_counter()
    response = await http.post("/chat/completions", json={
        "model": model, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
        "messages": [{"role": "user", "content": "Count from one to twenty."}]})
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        return Answer(model, response.status_code, seconds, False, response.text[:300])
    body = response.json()
    choice = body["choices"][0]
    complete = (choice["finish_reason"] == "length" and bool(choice["message"]["content"])
                and body["usage"]["completion_tokens"] == max_tokens)
    return Answer(model, 200, seconds, complete, "" if complete else str(body)[:300])


def loads_in(log: Path, models: list[str]) -> int:
    """How many times the gateway whose log this is started loading one of `models`."""
    text = log.read_text(errors="replace")
    return sum(text.count(f"model '{name}': loading on demand") for name in models)


def memory_of(health: dict, model: str) -> int:
    """The bytes a model counts against the budget, as /health shows them."""
    return sum(health["models"][model]["memory"]["bytes"].values())
