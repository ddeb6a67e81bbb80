"""Prometheus metrics: `GET /metrics` in the text format.

Three sources, so that nothing is counted twice and the hot path pays only for a few
dictionary lookups and additions per request:
- each finished request's access record (requests, latency, time to first token, tokens,
  429s by reason, upstream failures by kind), observed once the response is done;
- the models' state, read when scraped (in flight, queued, restarts, status);
- the llama.cpp workers' own metrics, fetched when scraped and re-exported with the
  model's name as a label.
Label values are bounded: a model label is a served model's name or "-", an endpoint is
one of the gateway's routes or "other", whatever clients send. With several gateway
processes every one of them answers with the server's totals (see _RequestStats).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString
from starlette.requests import Request
from starlette.responses import Response

from modelport.api.access_log import AccessRecord
from modelport.errors import ModelportError, RateLimitError
from modelport.routing.deployments import DeploymentStatus
from modelport.routing.registry import ModelRegistry

logger = logging.getLogger("modelport.gateway")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_UNTRACKED_PREFIXES = ("/health", "/metrics")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_WORKER_SCRAPE_TIMEOUT_S = 2.0
_PENDING_MAX = 1024  # finished requests waiting to be counted, at most

# (model name) -> the worker's own metrics text, or None when it has none to give.
WorkerScrape = Callable[[str], Awaitable[str | None]]


class _Histogram:
    """Counts per bucket (not cumulative: one addition per observation) and their sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(_LATENCY_BUCKETS) + 1)  # the last one: above every bound
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, i.e. Prometheus' "le" bucket.
        self.counts[bisect_left(_LATENCY_BUCKETS, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        buckets, running = [], 0
        for bound, count in zip((*_LATENCY_BUCKETS, math.inf), self.counts):
            running += count
            buckets.append((floatToGoString(bound), running))
        return buckets


class _RequestStats:
    """Per-request counts in plain dicts and lists, turned into metric families only when
    scraped: prometheus_client's counters and histograms take a lock and walk the
    buckets on every observation, which cost the hot path ~10 µs a request.

    With several gateway processes (`server.processes`), each follower sends a `snapshot`
    of its counts to the primary at every sync, and the primary `add`s them to its own
    when scraped, so every process's /metrics shows the server's totals."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str], _Histogram] = {}
        self.ttft: dict[tuple[str, str], _Histogram] = {}
        self.tokens: dict[tuple[str, str], int] = {}
        self.limited: dict[tuple[str, str], int] = {}  # (model, reason): 429s
        self.failures: dict[tuple[str, str], int] = {}  # (model, error class): 5xx

    def snapshot(self) -> dict[str, list]:
        """The counts as JSON-ready lists (labels first, then the values)."""
        counters = {name: [[*labels, count] for labels, count in getattr(self, name).items()]
                    for name in _COUNTERS}
        histograms = {name: [[*labels, list(h.counts), h.total]
                             for labels, h in getattr(self, name).items()]
                      for name in _HISTOGRAMS}
        return {**counters, **histograms}

    def add(self, snapshot: dict[str, list]) -> None:
        """Count another process's `snapshot` into these counts."""
        for name in _COUNTERS:
            series = getattr(self, name)
            for *labels, count in snapshot.get(name, ()):
                key = tuple(labels)
                series[key] = series.get(key, 0) + count
        for name in _HISTOGRAMS:
            series = getattr(self, name)
            for *labels, counts, total in snapshot.get(name, ()):
                histogram = series.setdefault(tuple(labels), _Histogram())
                if len(counts) != len(histogram.counts):
                    continue  # another version's buckets: not comparable
                histogram.counts = [a + b for a, b in zip(histogram.counts, counts)]
                histogram.total += total

    def families(self) -> list[Metric]:
        requests = _counter("modelport_requests",
                            "Requests answered, by model, endpoint and HTTP status.",
                            ["model", "endpoint", "status"], self.requests)
        tokens = _counter("modelport_tokens",
                          "Tokens read (prompt) and written (completion), by model.",
                          ["model", "kind"], self.tokens)
        limited = _counter("modelport_rate_limited",
                           "Requests refused with 429, by model and reason.",
                           ["model", "reason"], self.limited)
        failures = _counter("modelport_upstream_errors",
                            "Requests that failed on the model's side, by kind.",
                            ["model", "kind"], self.failures)
        families: list[Metric] = [requests, tokens]
        for name, doc, series in (
                ("modelport_request_duration_seconds",
                 "Time from request to the end of its answer.", self.latency),
                ("modelport_time_to_first_token_seconds",
                 "Streamed answers: time from request to the first event sent.", self.ttft)):
            family = HistogramMetricFamily(name, doc, labels=["model", "endpoint"])
            for labels, histogram in series.items():
                family.add_metric(labels, histogram.cumulative(), histogram.total)
            families.append(family)
        return [*families, limited, failures]


def _counter(name: str, doc: str, labels: list[str],
             series: dict[tuple[str, ...], int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, count in series.items():
        family.add_metric(values, count)
    return family


_COUNTERS = ("requests", "tokens", "limited", "failures")
_HISTOGRAMS = ("latency", "ttft")

# Other gateway processes' counts to add to this one's when scraped (the primary's view of
# its followers, see PeerStats); none in a single process.
PeerSnapshots = Callable[[], Iterable[dict[str, list]]]


class _StatsCollector:
    """This process's request counts, plus its peers' when it has any."""

    def __init__(self, own: _RequestStats, peers: PeerSnapshots | None,
                 catch_up: Callable[[], None]) -> None:
        self._own = own
        self._peers = peers
        self._catch_up = catch_up

    def describe(self) -> list[Metric]:
        return []  # label sets appear as requests arrive

    def collect(self) -> Iterable[Metric]:
        self._catch_up()
        snapshots = list(self._peers()) if self._peers is not None else []
        if not snapshots:
            return self._own.families()
        merged = _RequestStats()
        for snapshot in (self._own.snapshot(), *snapshots):
            merged.add(snapshot)
        return merged.families()


class PeerStats:
    """The followers' request counts as their last sync brought them, in the primary.
    A follower that exits (restarted, or replaced after a reload) leaves its counts in
    the totals, so no counter of the server goes back."""

    def __init__(self) -> None:
        self._latest: dict[int, dict[str, list]] = {}
        self._retired = _RequestStats()

    def update(self, pid: int, snapshot: dict[str, list]) -> None:
        self._latest[pid] = snapshot

    def retire(self, pid: int) -> None:
        snapshot = self._latest.pop(pid, None)
        if snapshot is not None:
            self._retired.add(snapshot)

    def snapshots(self) -> list[dict[str, list]]:
        return [self._retired.snapshot(), *self._latest.values()]


class GatewayMetrics:
    def __init__(self, registry: ModelRegistry, routes: Iterable[str],
                 peers: PeerSnapshots | None = None) -> None:
        self._models = registry
        self._routes = frozenset(routes)
        self.registry = CollectorRegistry(auto_describe=True)
        self._stats = _RequestStats()
        self.registry.register(_StatsCollector(self._stats, peers, self.catch_up))
        self.registry.register(_ModelStateCollector(registry))
        # (model, endpoint, status) -> the series that request updates, looked up by one
        # tuple instead of being found label by label.
        self._series: dict[tuple[str, str, int], tuple] = {}
        # Finished requests not counted yet: a request only joins this list (one append on
        # the request path); they are counted when read (scrape, snapshot) or when
        # _PENDING_MAX are waiting. Counting costs the same either way (~0.65 µs a request
        # in a loop); it just leaves the response path.
        self._pending: list[AccessRecord] = []

    def snapshot(self) -> dict[str, list]:
        """This process's request counts, for the primary (see _RequestStats)."""
        self.catch_up()
        return self._stats.snapshot()

    def observe(self, record: AccessRecord) -> None:
        if record.error is not None:
            self._count(record)  # at once: an error's traceback must not be kept alive
            return
        pending = self._pending
        pending.append(record)
        if len(pending) >= _PENDING_MAX:
            self.catch_up()

    def catch_up(self) -> None:
        """Count the finished requests waiting in the list."""
        pending, self._pending = self._pending, []
        for record in pending:
            self._count(record)

    def _count(self, record: AccessRecord) -> None:
        if record.path.startswith(_UNTRACKED_PREFIXES):
            return
        model = record.model if record.model in self._models else "-"
        endpoint = record.path if record.path in self._routes else "other"
        series = self._series.get((model, endpoint, record.status))
        if series is None:
            series = self._series[(model, endpoint, record.status)] = self._new_series(
                model, endpoint, record.status)
        requests, latency, ttft, prompt, completion = series
        stats = self._stats
        stats.requests[requests] += 1
        latency.observe(record.latency_s)
        if record.first_byte_s is not None:
            ttft.observe(record.first_byte_s)
        if record.prompt_tokens:
            stats.tokens[prompt] += record.prompt_tokens
        if record.completion_tokens:
            stats.tokens[completion] += record.completion_tokens
        if record.error is not None:
            self._observe_failure(model, record.error)

    def _new_series(self, model: str, endpoint: str, status: int) -> tuple:
        stats = self._stats
        requests = (model, endpoint, str(status))
        stats.requests.setdefault(requests, 0)
        latency = stats.latency.setdefault((model, endpoint), _Histogram())
        ttft = stats.ttft.setdefault((model, endpoint), _Histogram())
        prompt, completion = (model, "prompt"), (model, "completion")
        stats.tokens.setdefault(prompt, 0)
        stats.tokens.setdefault(completion, 0)
        return requests, latency, ttft, prompt, completion

    def _observe_failure(self, model: str, error: ModelportError) -> None:
        if isinstance(error, RateLimitError) or error.status == 429:
            counts, labels = self._stats.limited, (model, error.code or "rate_limited")
        elif error.status >= 500 and error.status != 499:
            counts, labels = self._stats.failures, (model, type(error).__name__)
        else:
            return
        counts[labels] = counts.get(labels, 0) + 1

    async def exposition(self, scrape_worker: WorkerScrape | None) -> bytes:
        text = generate_latest(self.registry)
        if scrape_worker is None:
            return text
        return text + await _worker_metrics(self._models, scrape_worker)


class _ModelStateCollector:
    """Per-model gauges read from the routing state at scrape time."""

    def __init__(self, registry: ModelRegistry) -> None:
        self._models = registry

    def describe(self) -> list[Metric]:
        return []  # the metrics depend on the models; collected at scrape time only

    def collect(self) -> Iterable[Metric]:
        in_flight = GaugeMetricFamily("modelport_requests_in_flight",
                                      "Requests being answered or waiting, by model.", labels=["model"])
        queued = GaugeMetricFamily("modelport_requests_queued",
                                   "Requests waiting for a free slot of a model (in the "
                                   "gateway's queue or a worker's).", labels=["model"])
        oldest = GaugeMetricFamily("modelport_queue_oldest_wait_seconds",
                                   "How long the model's longest-waiting queued request has "
                                   "waited.", labels=["model"])
        waited = CounterMetricFamily("modelport_queue_wait_seconds",
                                     "Seconds requests that queued waited for a slot, in all.",
                                     labels=["model"])
        waits = CounterMetricFamily("modelport_queue_waits",
                                    "Requests that waited in the model's queue.", labels=["model"])
        refused = CounterMetricFamily("modelport_queue_refused",
                                      "Requests answered 429 by the model's queue (full, or "
                                      "waited queue_timeout_s).", labels=["model"])
        restarts = GaugeMetricFamily("modelport_worker_restarts",
                                     "Times a model's worker was restarted.", labels=["model"])
        status = GaugeMetricFamily("modelport_model_status",
                                   "1 for the model's current status.", labels=["model", "status"])
        replica_in_flight = GaugeMetricFamily(
            "modelport_replica_in_flight", "Requests being answered or waiting, by replica.",
            labels=["model", "replica"])
        replica_ready = GaugeMetricFamily(
            "modelport_replica_ready", "1 while the replica is in rotation.",
            labels=["model", "replica"])
        for deployment in self._models:
            name = deployment.name
            # in_flight_elsewhere: the other gateway processes' (in the primary)
            in_flight.add_metric([name], deployment.in_flight + deployment.in_flight_elsewhere
                                 + deployment.queue.queue.length)
            slots = getattr(deployment.config, "parallel", None)
            waiting = sum(max(0, r.in_flight - slots) for r in deployment.replicas) \
                if slots else 0
            queue = deployment.queue
            queued.add_metric([name], waiting + queue.queue.length)
            oldest.add_metric([name], queue.queue.oldest_wait_s(time.monotonic()))
            waited.add_metric([name], queue.waited_s_total)
            waits.add_metric([name], queue.queued_total)
            refused.add_metric([name], queue.refused_total)
            restarts.add_metric([name], deployment.restarts)
            for value in DeploymentStatus:
                status.add_metric([name, value.value], 1 if deployment.status is value else 0)
            for replica in deployment.replicas:
                replica_in_flight.add_metric([name, replica.name], replica.in_flight)
                replica_ready.add_metric([name, replica.name],
                                         1 if replica.status is DeploymentStatus.READY else 0)
        return [in_flight, queued, oldest, waited, waits, refused, restarts, status,
                replica_in_flight, replica_ready]


async def _worker_metrics(models: ModelRegistry, scrape_worker: WorkerScrape) -> bytes:
    """The ready llama.cpp workers' own metrics, each series labelled with its model."""
    names = [d.name for d in models
             if d.engine == "llamacpp" and d.status is DeploymentStatus.READY]
    texts = await asyncio.gather(*(_bounded(scrape_worker, name) for name in names))
    families: dict[str, tuple[str, str, list[str]]] = {}
    for name, text in zip(names, texts):
        if not text:
            continue
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError as error:
            logger.warning("model '%s': worker metrics unreadable (%s)", name, error)
            continue
        for family in parsed:
            kind = family.type if family.type in ("counter", "gauge") else "untyped"
            entry = families.setdefault(family.name, (kind, family.documentation, []))
            for sample in family.samples:
                labels = {"model": name, **sample.labels}
                rendered = ",".join(f'{k}="{_escaped(v)}"' for k, v in labels.items())
                entry[2].append(f"{sample.name}{{{rendered}}} {sample.value!r}")
    lines: list[str] = []
    for family_name, (kind, doc, samples) in families.items():
        lines.append(f"# HELP {family_name} {_escaped(doc)}")
        lines.append(f"# TYPE {family_name} {kind}")
        lines.extend(samples)
    return ("\n".join(lines) + "\n").encode() if lines else b""


async def _bounded(scrape_worker: WorkerScrape, name: str) -> str | None:
    try:
        return await asyncio.wait_for(scrape_worker(name), _WORKER_SCRAPE_TIMEOUT_S)
    except (asyncio.TimeoutError, OSError, ModelportError) as error:
        logger.debug("model '%s': no worker metrics (%s)", name, type(error).__name__)
        return None


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


async def metrics_endpoint(request: Request) -> Response:
    state = request.app.state.gateway
    if state.primary_metrics is not None:  # a follower: the server's totals are the primary's
        body = await state.primary_metrics.exposition(state.metrics.snapshot())
    else:
        body = await state.metrics.exposition(getattr(state.lifecycle, "worker_metrics", None))
    return Response(body, media_type=CONTENT_TYPE)

