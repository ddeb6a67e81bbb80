#!/usr/bin/env python
"""Soak: mixed load against the default models for a long time, errors by kind and RSS per minute.

Starts `modelport serve` with the default models on a free loopback port (or targets --url),
then CONCURRENCY clients send a seeded, weighted mix until --duration has passed:
  chat, chat_stream, chat_stream_usage    chat completions, streaming with and without usage
  completion, completion_stream           legacy completions
  embed_one, embed_many                   embeddings of one and of several texts
  abort_stream_first_chunk                a stream closed after its first event
  abort_stream_delay                      a stream closed after a random short delay
  abort_nonstream                         a non-streaming request abandoned after a short delay
  malformed                               invalid JSON, wrong types, unknown models, deep nesting,
                                          missing fields, an oversized body, bad content parts
                                          and tools (benchmarks/soak_requests.py)

Every outcome is classified: ok, aborted, 4xx:<status>, 5xx:<status>, transport, hung (no end
within --request-deadline), stream_no_done, stream_error_event, accepted_malformed, bad_ok_body;
with flags non_envelope (an error body that is not the OpenAI envelope), unexpected_status,
missing_usage. Every --sample-interval seconds it records the RSS of the gateway and of each
worker. Targets: zero 5xx, zero hung requests, gateway RSS growth < 5% from the sample at
--warmup seconds (the first sample if the run is shorter) to the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from dataclasses import dataclass, field

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ServeProcess, machine, print_table, summarize_ms, write_result  # noqa: E402
from soak_requests import (  # noqa: E402
    CHAT, CHAT_MODELS, COMPLETIONS, EMBEDDINGS, Malformed, chat_body, completion_body, embedding_body,
    malformed_shapes,
)

WEIGHTS = {
    "chat": 12, "chat_stream": 10, "chat_stream_usage": 8, "completion": 6, "completion_stream": 4,
    "embed_one": 8, "embed_many": 6, "abort_stream_first_chunk": 4, "abort_stream_delay": 4,
    "abort_nonstream": 4, "malformed": 14,
}
TARGET_GROWTH_PCT = 5.0
JSON_HEADERS = {"Content-Type": "application/json"}


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def parent_pid(pid: int) -> int | None:
    try:
        # The command name may hold spaces and parentheses; the fields after the last ")" do not.
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (ppid := parent_pid(int(entry.name))) is not None:
            children[ppid].append(int(entry.name))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return sorted(found)


def is_envelope(payload: object) -> bool:
    error = payload.get("error") if isinstance(payload, dict) else None
    return (isinstance(error, dict) and {"message", "type", "param", "code"} <= error.keys()
            and isinstance(error["message"], str) and isinstance(error["type"], str))


def error_detail(payload: object, raw: bytes) -> str:
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        text = f"{error.get('type')}: {error.get('message')}"
    else:
        text = raw[:400].decode("utf-8", "replace")
    return " ".join(text.split())[:200]


def worker_secret(pid: int | None) -> str:
    try:
        for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            if entry.startswith(b"MODELPORT_WORKER_SECRET="):
                return entry.split(b"=", 1)[1].decode()
    except OSError:
        pass
    return ""


@dataclass
class Result:
    outcome: str
    status: int | None = None
    detail: str = ""
    flags: list[str] = field(default_factory=list)


@dataclass
class Progress:
    """Where a request stands, so a hung one can say where it stopped."""

    phase: str = "sending"
    events: int = 0


def error_result(status: int, raw: bytes) -> Result:
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    flags = [] if is_envelope(payload) else ["non_envelope"]
    outcome = f"5xx:{status}" if status >= 500 else f"4xx:{status}" if status >= 400 else f"other:{status}"
    return Result(outcome, status, error_detail(payload, raw), flags)


def ok_body_problem(path: str, raw: bytes, texts: int) -> str | None:
    try:
        payload = json.loads(raw)
        if path == EMBEDDINGS:
            vectors = [item["embedding"] for item in payload["data"]]
            if len(vectors) != texts or len({len(v) for v in vectors}) != 1 or not vectors[0]:
                return f"{len(vectors)} embeddings for {texts} texts"
        elif path == CHAT:
            if not isinstance(payload["choices"][0]["message"], dict):
                return "choices[0].message is not an object"
        elif not isinstance(payload["choices"][0]["text"], str):
            return "choices[0].text is not a string"
    except (ValueError, KeyError, IndexError, TypeError) as error:
        return f"{type(error).__name__}: {raw[:120]!r}"
    return None


async def plain(session: aiohttp.ClientSession, url: str, path: str, body: bytes,
                progress: Progress, texts: int = 0) -> Result:
    async with session.post(url + path, data=body, headers=JSON_HEADERS) as response:
        progress.phase = "reading body"
        raw = await response.read()
        if response.status != 200:
            return error_result(response.status, raw)
        problem = ok_body_problem(path, raw, texts)
        return Result("bad_ok_body", 200, problem) if problem else Result("ok", 200)


async def stream(session: aiohttp.ClientSession, url: str, path: str, body: bytes,
                 progress: Progress, want_usage: bool = False, close_after: int = 0) -> Result:
    async with session.post(url + path, data=body, headers=JSON_HEADERS) as response:
        try:
            if response.status != 200:
                progress.phase = "reading error body"
                return error_result(response.status, await response.read())
            progress.phase = "streaming"
            done, usage, error, flags = False, False, None, []
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    continue
                progress.events += 1
                try:
                    event = json.loads(data)
                except ValueError:
                    flags.append("bad_sse_json")
                    continue
                if isinstance(event, dict) and "error" in event:
                    error = event
                    if not is_envelope(event):
                        flags.append("non_envelope")
                elif isinstance(event, dict) and event.get("usage"):
                    usage = True
                if close_after and progress.events >= close_after:
                    response.close()
                    return Result("aborted", 200, "after first event")
        except asyncio.CancelledError:
            response.close()
            raise
    if error is not None:
        return Result("stream_error_event", 200, error_detail(error, json.dumps(error).encode()),
                      flags + ([] if done else ["stream_no_done"]))
    if not done:
        return Result("stream_no_done", 200, f"{progress.events} events", flags)
    if want_usage and not usage:
        flags.append("missing_usage")
    return Result("ok", 200, "", flags)


async def abandon_after(delay: float, work) -> Result:
    """Run `work`; if it has not finished after `delay`, cancel it, which drops the connection."""
    task = asyncio.ensure_future(work)
    try:
        finished, _ = await asyncio.wait({task}, timeout=delay)
        if finished:
            return task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return Result("aborted", None, f"after {delay:.2f}s")


class Soak:
    def __init__(self, args: argparse.Namespace, url: str, gateway_pid: int | None):
        self.args, self.url, self.gateway_pid = args, url, gateway_pid
        self.rng = random.Random(args.seed)
        self.shapes = malformed_shapes(args.max_body_bytes)
        self.weights = {**WEIGHTS, **dict(args.weight or [])}
        self.kind_deck = [kind for kind, weight in self.weights.items() if weight > 0]  # every kind once before the weighted draw
        self.rng.shuffle(self.kind_deck)
        self.shape_deck: list[Malformed] = []
        self.stop = asyncio.Event()
        self.interrupted = False
        self.started = time.monotonic()
        self.sent: Counter[str] = Counter()
        self.outcomes: dict[str, Counter[str]] = defaultdict(Counter)
        self.flags: dict[str, Counter[str]] = defaultdict(Counter)
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.examples: dict[tuple, dict] = {}
        self.samples: list[dict] = []
        self.known_pids: set[int] = set()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def next_kind(self) -> str:
        if self.kind_deck:
            return self.kind_deck.pop()
        return self.rng.choices(list(self.weights), weights=list(self.weights.values()))[0]

    def next_shape(self) -> Malformed:
        if not self.shape_deck:
            self.shape_deck = list(self.shapes)
            self.rng.shuffle(self.shape_deck)
        return self.shape_deck.pop()

    def request(self, session: aiohttp.ClientSession, kind: str, progress: Progress):
        """(shape name, expected statuses, coroutine) for one request of `kind`."""
        rng, tokens, url = self.rng, self.args.max_tokens, self.url
        encode = lambda body: json.dumps(body).encode()  # noqa: E731
        if kind == "chat":
            return kind, (200,), plain(session, url, CHAT, encode(chat_body(rng, tokens)), progress)
        if kind in ("chat_stream", "chat_stream_usage"):
            usage = kind == "chat_stream_usage"
            extra = {"stream_options": {"include_usage": True}} if usage else {}
            body = encode(chat_body(rng, tokens, stream=True, **extra))
            return kind, (200,), stream(session, url, CHAT, body, progress, want_usage=usage)
        if kind == "completion":
            return kind, (200,), plain(session, url, COMPLETIONS, encode(completion_body(rng, tokens)), progress)
        if kind == "completion_stream":
            body = encode(completion_body(rng, tokens, stream=True))
            return kind, (200,), stream(session, url, COMPLETIONS, body, progress)
        if kind in ("embed_one", "embed_many"):
            count = 1 if kind == "embed_one" else rng.randint(2, 8)
            body = encode(embedding_body(rng, count))
            return kind, (200,), plain(session, url, EMBEDDINGS, body, progress, texts=count)
        # Aborted requests ask for more tokens so that the abort lands while the engine works.
        long_tokens = max(tokens, 48)
        if kind == "abort_stream_first_chunk":
            body = encode(chat_body(rng, long_tokens, stream=True))
            return kind, (200,), stream(session, url, CHAT, body, progress, close_after=1)
        if kind == "abort_stream_delay":
            body = encode(chat_body(rng, long_tokens, stream=True))
            delay = rng.uniform(0.05, 2.0)
            return kind, (200,), abandon_after(delay, stream(session, url, CHAT, body, progress))
        if kind == "abort_nonstream":
            body = encode(chat_body(rng, long_tokens))
            delay = rng.uniform(0.1, 1.5)
            return kind, (200,), abandon_after(delay, plain(session, url, CHAT, body, progress))
        shape = self.next_shape()
        return shape.name, shape.expected, plain(session, url, shape.path, shape.body, progress)

    async def one(self, session: aiohttp.ClientSession, kind: str) -> None:
        progress = Progress()
        shape, expected, work = self.request(session, kind, progress)
        self.sent[kind] += 1
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(work, self.args.request_deadline)
        except aiohttp.ClientError as error:  # also aiohttp's own timeouts, which are not hangs
            result = Result("transport", None, f"{type(error).__name__}: {str(error)[:120]}")
        except asyncio.TimeoutError:
            result = Result("hung", None, f"{progress.phase}, {progress.events} events")
        except Exception as error:  # a bug of this script must not end the soak silently
            result = Result("client_error", None, f"{type(error).__name__}: {str(error)[:120]}")
        elapsed = time.monotonic() - started
        if kind == "malformed" and result.outcome in ("ok", "bad_ok_body"):
            result.outcome = "accepted_malformed"
        if result.status is not None and result.status not in expected and result.outcome != "aborted":
            result.flags.append(f"unexpected_status:{result.status}")
        self.outcomes[kind][result.outcome] += 1
        for flag in result.flags:
            self.flags[kind][flag] += 1
        if result.outcome == "ok":
            self.latency[kind].append(elapsed)
        expected_4xx = result.outcome.startswith("4xx") and not result.flags
        if result.outcome not in ("ok", "aborted") and not expected_4xx or result.flags:
            key = (kind, shape, result.outcome, result.status, tuple(result.flags), result.detail[:80])
            example = self.examples.setdefault(key, {
                "kind": kind, "shape": shape, "outcome": result.outcome, "status": result.status,
                "flags": result.flags, "detail": result.detail, "first_at_s": round(self.elapsed(), 1),
                "count": 0})
            example["count"] += 1

    async def client(self, session: aiohttp.ClientSession) -> None:
        while not self.stop.is_set():
            await self.one(session, self.next_kind())

    async def health(self, session: aiohttp.ClientSession) -> dict | None:
        try:
            async with session.get(self.url + "/health", timeout=aiohttp.ClientTimeout(total=10)) as r:
                return await r.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return None

    async def sample(self, session: aiohttp.ClientSession) -> dict:
        report = await self.health(session)
        models = (report or {}).get("models", {})
        workers: dict[str, dict] = {}
        for name, model in models.items():
            pid = (model.get("worker") or {}).get("pid")
            workers[name] = {"pid": pid, "rss_kib": rss_kib(pid) if pid else None,
                             "status": model.get("status"), "in_flight": model.get("in_flight"),
                             "restarts": model.get("restarts")}
        if self.gateway_pid is None:
            # With --url: the gateway is the parent of its workers.
            pids = [w["pid"] for w in workers.values() if w["pid"]]
            self.gateway_pid = parent_pid(pids[0]) if pids else None
        if self.gateway_pid is not None:
            # /health may not show pids (API keys set); the gateway's child processes are its workers.
            named = {w["pid"] for w in workers.values()}
            for pid in descendants(self.gateway_pid):
                self.known_pids.add(pid)
                if pid not in named:
                    workers[f"pid:{pid}"] = {"pid": pid, "rss_kib": rss_kib(pid)}
        entry = {"t_s": round(self.elapsed(), 1), "gateway_pid": self.gateway_pid,
                 "gateway_rss_kib": rss_kib(self.gateway_pid) if self.gateway_pid else None,
                 "workers": workers, "health": "ok" if report else "unreachable",
                 "requests_by_kind": dict(self.sent)}
        self.samples.append(entry)
        bad = sum(self.outcomes[k][o] for k in self.outcomes for o in self.outcomes[k]
                  if o.startswith("5xx") or o == "hung")
        rss = entry["gateway_rss_kib"]
        print(f"[{entry['t_s']:7.1f}s] sent {sum(self.sent.values())}, 5xx+hung {bad}, gateway RSS "
              f"{rss / 1024 if rss else float('nan'):.1f} MiB", flush=True)
        return entry

    async def sampler(self, session: aiohttp.ClientSession) -> None:
        while True:
            try:
                await asyncio.wait_for(self.stop.wait(), self.args.sample_interval)
                return
            except asyncio.TimeoutError:
                await self.sample(session)

    async def in_flight(self, session: aiohttp.ClientSession) -> dict | None:
        report = await self.health(session)
        return {n: m.get("in_flight") for n, m in report.get("models", {}).items()} if report else None

    async def drained_in_flight(self, session: aiohttp.ClientSession, seconds: float = 15) -> dict | None:
        """In-flight counts once load has stopped: anything left is a leaked slot."""
        deadline = time.monotonic() + seconds
        while True:
            counts = await self.in_flight(session)
            if counts is not None and not any(counts.values()) or time.monotonic() > deadline:
                return counts
            await asyncio.sleep(0.25)

    async def idle_engine(self, session: aiohttp.ClientSession) -> None:
        report = await self.health(session) or {}
        worker = report.get("models", {}).get(CHAT_MODELS[0], {}).get("worker")
        deadline = time.monotonic() + self.args.request_deadline
        while await self.busy_slots(session, worker) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)

    async def busy_slots(self, session: aiohttp.ClientSession, worker: dict | None) -> int | None:
        """Generations llama.cpp is running (its /slots), which the gateway's count cannot show.
        Workers only answer with their per-start secret, read from the worker's environment
        (this benchmark runs as the same user)."""
        if not worker or not worker.get("url"):
            return None
        root = worker["url"].rstrip("/").removesuffix("/v1")
        headers = {"Authorization": f"Bearer {worker_secret(worker.get('pid'))}"}
        try:
            async with session.get(root + "/slots", headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=10)) as r:
                return sum(1 for slot in await r.json() if slot.get("is_processing"))
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, AttributeError, TypeError):
            return None

    async def cancellation_probe(self, session: aiohttp.ClientSession, streaming: bool) -> dict:
        """Abandon one long generation on an idle server; its slot should free within seconds.

        Under load an abandoned request that keeps generating hides among the others; alone,
        the gateway's in-flight count and the engine's busy slots show whether the client
        leaving reached the gateway and then the engine.
        """
        report = await self.health(session) or {}
        model = report.get("models", {}).get(CHAT_MODELS[0], {})
        worker = model.get("worker")
        if model.get("in_flight") != 0 or await self.busy_slots(session, worker):
            return {"skipped": "server not idle"}
        # Long enough (seconds even alone on the machine) to outlast the window.
        body = json.dumps(chat_body(self.rng, 600, stream=streaming, ignore_eos=True,
                                    temperature=0)).encode()
        progress = Progress()
        if streaming:
            work = stream(session, self.url, CHAT, body, progress, close_after=1)
        else:
            work = abandon_after(1.0, plain(session, self.url, CHAT, body, progress))
        result = await asyncio.wait_for(work, self.args.request_deadline)
        left = time.monotonic()
        gateway_at = engine_at = None
        while time.monotonic() - left < self.args.cancel_window and (gateway_at is None or engine_at is None):
            now = round(time.monotonic() - left, 2)
            if gateway_at is None and (await self.in_flight(session) or {}).get(CHAT_MODELS[0]) == 0:
                gateway_at = now
            if engine_at is None and await self.busy_slots(session, worker) == 0:
                engine_at = now
            await asyncio.sleep(0.25)
        engine_known = worker is not None and await self.busy_slots(session, worker) is not None
        return {"client": result.outcome, "gateway_released_after_s": gateway_at,
                "engine_released_after_s": engine_at if engine_known else "unknown",
                "released_within_window": gateway_at is not None and (engine_at is not None or not engine_known)}

    def interrupt(self) -> None:
        self.interrupted = True
        self.stop.set()
        # A second Ctrl-C ends at once; the caller still stops the server.
        asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)

    async def run(self) -> dict:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.interrupt)
        loop.add_signal_handler(signal.SIGTERM, self.interrupt)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=None)) as session:
            self.started = time.monotonic()
            await self.sample(session)
            loop.call_later(self.args.duration, self.stop.set)
            sampler = asyncio.create_task(self.sampler(session))
            await asyncio.gather(*(self.client(session) for _ in range(self.args.concurrency)))
            self.stop.set()
            await sampler
            load_s = self.elapsed()
            in_flight = await self.drained_in_flight(session)
            cancellation = {}
            if not self.interrupted:
                for label, streaming in (("stream", True), ("non_stream", False)):
                    # A probe that was not cancelled may still be generating: wait it out.
                    await self.drained_in_flight(session, self.args.request_deadline)
                    await self.idle_engine(session)
                    cancellation[label] = await self.cancellation_probe(session, streaming)
            await self.sample(session)
        return self.summary(load_s, in_flight, cancellation)

    def growth(self, rss) -> tuple[float | None, float | None]:
        """Percent growth from the sample at --warmup (the first if none is earlier than the
        last) to the last sample, and the time of that baseline sample."""
        series = [(s["t_s"], rss(s)) for s in self.samples if rss(s)]
        if len(series) < 2:
            return None, None
        base = next((p for p in series[:-1] if p[0] >= self.args.warmup), series[0])
        return round((series[-1][1] - base[1]) / base[1] * 100, 2), base[0]

    def summary(self, load_s: float, in_flight: dict | None, cancellation: dict) -> dict:
        totals: Counter[str] = Counter()
        flag_totals: Counter[str] = Counter()
        for kind in self.outcomes:
            totals.update(self.outcomes[kind])
            flag_totals.update(self.flags[kind])
        five_xx = sum(n for o, n in totals.items() if o.startswith("5xx"))
        growth, base_t = self.growth(lambda s: s["gateway_rss_kib"])
        worker_growth = {}
        for name in {n for s in self.samples for n in s["workers"]}:
            pct, _ = self.growth(lambda s: (s["workers"].get(name) or {}).get("rss_kib"))
            worker_growth[name] = pct
        checks = {
            "zero_5xx": five_xx == 0,
            "zero_hung": totals["hung"] == 0,
            "gateway_rss_growth_below_5pct": growth is not None and growth < TARGET_GROWTH_PCT,
            # Reported, not part of the target:
            "zero_non_envelope": flag_totals["non_envelope"] == 0,
            "zero_stream_no_done": totals["stream_no_done"] + flag_totals["stream_no_done"] == 0,
            "zero_transport_errors": totals["transport"] == 0,
            "in_flight_drained": in_flight is not None and not any(in_flight.values()),
        }
        if cancellation:
            checks["abandoned_requests_cancelled"] = all(p.get("released_within_window")
                                                         for p in cancellation.values())
        passed = all(checks[k] for k in ("zero_5xx", "zero_hung", "gateway_rss_growth_below_5pct"))
        return {
            "settings": vars(self.args), "url": self.url, "interrupted": self.interrupted,
            "load_s": round(load_s, 1), "sent_by_kind": dict(self.sent),
            "totals": dict(totals), "flags": dict(flag_totals),
            "by_kind": {k: {"outcomes": dict(self.outcomes[k]), "flags": dict(self.flags[k])}
                        for k in WEIGHTS if self.sent[k]},
            "five_xx": five_xx, "hung": totals["hung"], "non_envelope": flag_totals["non_envelope"],
            "stream_no_done": totals["stream_no_done"] + flag_totals["stream_no_done"],
            "stream_error_events": totals["stream_error_event"],
            "transport_errors": totals["transport"],
            "examples": sorted(self.examples.values(), key=lambda e: -e["count"]),
            "latency_ms": {k: summarize_ms(v) for k, v in self.latency.items()},
            "in_flight_after_drain": in_flight,
            "cancellation_probes": cancellation,
            "rss_samples": self.samples,
            "gateway_rss_growth_pct": growth,
            "growth_baseline_t_s": base_t,
            "worker_rss_growth_pct": worker_growth,
            "checks": checks, "pass": passed,
        }


def print_summary(report: dict) -> None:
    rows = [[kind, report["sent_by_kind"][kind],
             ", ".join(f"{o} {n}" for o, n in sorted(entry["outcomes"].items())),
             ", ".join(f"{f} {n}" for f, n in sorted(entry["flags"].items()))]
            for kind, entry in report["by_kind"].items()]
    print_table("outcomes by kind", ["kind", "sent", "outcomes", "flags"], rows)
    if report["examples"]:
        print_table("notable outcomes", ["count", "kind", "shape", "outcome", "flags", "detail"], [
            [e["count"], e["kind"], e["shape"], e["outcome"], ",".join(e["flags"]), e["detail"][:100]]
            for e in report["examples"]])
    rows = []
    for sample in report["rss_samples"]:
        gateway = sample["gateway_rss_kib"]
        workers = "  ".join(f"{n} {w['rss_kib'] / 1024:.1f}" for n, w in sample["workers"].items()
                            if w.get("rss_kib"))
        rows.append([sample["t_s"], round(gateway / 1024, 1) if gateway else "?", workers,
                     sum(sample["requests_by_kind"].values())])
    print_table("RSS (MiB)", ["t s", "gateway", "workers", "requests"], rows)
    for line, count in report.get("server_log_exceptions", {}).items():
        print(f"server log: {count} x {line}")
    print(f"\nin flight after drain: {report['in_flight_after_drain']}")
    for label, probe in report["cancellation_probes"].items():
        print(f"abandoned {label} request: {probe}")
    growth = report["gateway_rss_growth_pct"]
    print(f"gateway RSS growth from t={report['growth_baseline_t_s']}s to the end: {growth}%; "
          f"workers: {report['worker_rss_growth_pct']}")
    for name, ok in report["checks"].items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    print(f"{'PASS' if report['pass'] else 'FAIL'}: 5xx {report['five_xx']} (target 0), hung "
          f"{report['hung']} (target 0), gateway RSS growth {growth}% (target < {TARGET_GROWTH_PCT}%)"
          f"{' (interrupted after ' + str(report['load_s']) + ' s)' if report['interrupted'] else ''}")


def write(report: dict, out: str | None) -> Path:
    if not out:
        return write_result("soak", report)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
               **report}
    path.write_text(json.dumps(payload, indent=2))
    return path


def stop_server(serve: ServeProcess, known_pids: set[int]) -> list[int]:
    """Stop the gateway, then any of its workers that outlived it; returns those."""
    serve.stop()
    time.sleep(1)
    leftover = [pid for pid in sorted(known_pids) if rss_kib(pid) is not None]
    for pid in leftover:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return leftover


def log_exceptions(log: Path) -> dict[str, int]:
    """Exceptions the server logged, by their last line: errors a client may never see."""
    found: Counter[str] = Counter()
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    in_traceback = False
    for line in lines:
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and line and not line.startswith((" ", "\t", "Traceback", "The above",
                                                            "During handling")):
            found[line.strip()[:200]] += 1
            in_traceback = False
    return dict(found)


def _weight(text: str) -> tuple[str, float]:
    kind, _, value = text.partition("=")
    if kind not in WEIGHTS:
        raise argparse.ArgumentTypeError(f"unknown kind {kind!r}; one of {', '.join(WEIGHTS)}")
    try:
        return kind, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not KIND=NUMBER") from None


def _interrupted(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    from modelport.config import ServerConfig
    from modelport.config.defaults import DEFAULT_CONFIG

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=1800, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=8, help="clients sending at once")
    parser.add_argument("--sample-interval", type=float, default=60, help="seconds between RSS samples")
    parser.add_argument("--warmup", type=float, default=300,
                        help="RSS growth is measured from the first sample at or after this time")
    parser.add_argument("--max-tokens", type=int, default=24, help="max_tokens of generation requests")
    parser.add_argument("--request-deadline", type=float, default=120,
                        help="seconds after which a request counts as hung")
    parser.add_argument("--cancel-window", type=float, default=3,
                        help="seconds an abandoned request may hold its slot in the end probes")
    parser.add_argument("--weight", type=_weight, action="append", metavar="KIND=N",
                        help=f"change one kind's weight (repeatable); defaults: "
                             f"{', '.join(f'{k}={v}' for k, v in WEIGHTS.items())}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url", help="target this running server instead of starting one")
    parser.add_argument("--pid", type=int, help="gateway pid with --url (default: its workers' parent)")
    parser.add_argument("--max-body-bytes", type=int,
                        default=ServerConfig.model_fields["max_body_bytes"].default,
                        help="the server's max_body_bytes, for the oversized body")
    parser.add_argument("--out", help="JSON result path (default: benchmarks/out/soak-<time>.json)")
    args = parser.parse_args()

    # Until the event loop installs its own handlers, a SIGTERM should still stop the server.
    signal.signal(signal.SIGTERM, _interrupted)
    serve = None
    soak = None
    try:
        if args.url:
            url, pid = args.url.rstrip("/"), args.pid
        else:
            serve = ServeProcess(DEFAULT_CONFIG["models"])
            print(f"starting modelport serve on {serve.url} (log {serve.log})", flush=True)
            serve.start()
            url, pid = serve.url, serve.process.pid  # type: ignore[union-attr]
            print(f"ready after {serve.ready_after_s:.1f}s", flush=True)
        soak = Soak(args, url, pid)
        report = asyncio.run(soak.run())
    finally:
        if serve is not None:
            leftover = stop_server(serve, soak.known_pids if soak else set())
            serve.config.unlink(missing_ok=True)
    if serve is not None:
        report["leftover_worker_pids_after_stop"] = leftover
        report["startup_to_ready_s"] = round(serve.ready_after_s or 0, 1)
        report["server_log"] = str(serve.log)
        report["server_log_exceptions"] = log_exceptions(serve.log)
    print_summary(report)
    print(f"\nwritten: {write(report, args.out)}")


if __name__ == "__main__":
    main()
