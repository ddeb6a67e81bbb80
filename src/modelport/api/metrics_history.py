"""The last hour of the gateway's metrics, per model, for the console's charts.

A background task reads the Prometheus counters and histograms the gateway already keeps
(api.metrics) every 10 seconds and stores the difference from the previous reading in a
ring buffer: requests/s, tokens/s, 429s/s and errors/s (answers of 400 and up, as usage
rows count them), latency and time-to-first-token percentiles over the interval, and
requests in flight at the sampling moment. Requests pay nothing for it: the hot path only
increments the counters it always did.

    GET /admin/metrics/history?since=<unix time>   (behind the master key)

The answer also carries each model's state right now (`live`), for the console's table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from modelport.errors import InvalidRequestError
from modelport.routing.registry import ModelRegistry

logger = logging.getLogger("modelport.gateway")

SAMPLE_INTERVAL_S = 10.0
WINDOW_S = 3600.0
SERIES = ("requests_per_s", "tokens_per_s", "rate_limited_per_s", "errors_per_s",
          "latency_p50_s", "latency_p95_s", "ttft_p50_s", "ttft_p95_s", "in_flight")
TOTAL = "*"  # every served model together


@dataclass
class _Reading:
    """Cumulative counts of one model at one moment."""

    requests: float = 0.0
    tokens: float = 0.0
    rate_limited: float = 0.0
    errors: float = 0.0
    latency: dict[float, float] = field(default_factory=dict)  # bucket bound -> count
    ttft: dict[float, float] = field(default_factory=dict)

    def add(self, other: "_Reading") -> None:
        self.requests += other.requests
        self.tokens += other.tokens
        self.rate_limited += other.rate_limited
        self.errors += other.errors
        for mine, theirs in ((self.latency, other.latency), (self.ttft, other.ttft)):
            for bound, count in theirs.items():
                mine[bound] = mine.get(bound, 0.0) + count


def read_counters(families: Iterable[Any], models: set[str]) -> dict[str, _Reading]:
    """Per-model cumulative counts from prometheus_client metric families."""
    readings = {name: _Reading() for name in models}
    for family in families:
        for sample in family.samples:
            reading = readings.get(sample.labels.get("model"))
            if reading is None:
                continue
            name = sample.name
            if name == "modelport_requests_total":
                reading.requests += sample.value
                # Errors as the usage records count them (every answer with a status of
                # 400 or more), so the Metrics and Usage pages agree.
                if int(sample.labels.get("status") or 0) >= 400:
                    reading.errors += sample.value
            elif name == "modelport_tokens_total":
                reading.tokens += sample.value
            elif name == "modelport_rate_limited_total":
                reading.rate_limited += sample.value
            elif name == "modelport_request_duration_seconds_bucket":
                _add_bucket(reading.latency, sample)
            elif name == "modelport_time_to_first_token_seconds_bucket":
                _add_bucket(reading.ttft, sample)
    return readings


def _add_bucket(buckets: dict[float, float], sample: Any) -> None:
    bound = float(sample.labels["le"])
    buckets[bound] = buckets.get(bound, 0.0) + sample.value


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float | None:
    """The q-quantile of the observations made between two readings of a cumulative
    histogram, interpolated inside its bucket (as PromQL's histogram_quantile)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts):
        if count >= rank:
            if math.isinf(bound):
                return lower  # past the largest finite bucket: its bound is all we know
            inside = count - below
            fraction = (rank - below) / inside if inside > 0 else 1.0
            return round(lower + (bound - lower) * fraction, 4)
        lower, below = bound, count
    return None


class MetricsHistory:
    """A ring buffer of per-model samples over the last `window_s` seconds."""

    def __init__(self, metrics: Any, models: ModelRegistry,
                 interval_s: float = SAMPLE_INTERVAL_S, window_s: float = WINDOW_S) -> None:
        self._metrics = metrics  # api.metrics.GatewayMetrics
        self._models = models
        self.interval_s = interval_s
        self.window_s = window_s
        self._times: deque[float] = deque(maxlen=max(1, int(window_s / interval_s)))
        self._series: dict[str, dict[str, deque]] = {}
        self._previous: dict[str, _Reading] | None = None
        self._previous_at = 0.0
        self._task: asyncio.Task | None = None

    def sample(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        names = {deployment.name for deployment in self._models}
        readings = read_counters(self._metrics.registry.collect(), names)
        total = _Reading()
        for reading in readings.values():
            total.add(reading)
        readings[TOTAL] = total
        in_flight = {d.name: d.in_flight + d.in_flight_elsewhere for d in self._models}
        in_flight[TOTAL] = sum(in_flight.values())
        previous, elapsed = self._previous, now - self._previous_at
        self._previous, self._previous_at = readings, now
        if previous is None or elapsed <= 0:
            return  # the first reading is the baseline the next one is measured from
        self._times.append(round(now, 3))
        for name, reading in readings.items():
            point = _point(previous.get(name, _Reading()), reading, elapsed)
            point["in_flight"] = in_flight[name]
            series = self._series.get(name)
            if series is None:
                # A model seen for the first time gets gaps for the moments before it.
                series = self._series[name] = {
                    key: deque([None] * (len(self._times) - 1), maxlen=self._times.maxlen)
                    for key in SERIES}
            for key in SERIES:
                series[key].append(point[key])

    def view(self, since: float | None = None) -> dict[str, Any]:
        times = list(self._times)
        start = 0 if since is None else next(
            (i for i, t in enumerate(times) if t > since), len(times))
        return {
            "object": "metrics.history", "interval_s": self.interval_s,
            "window_s": self.window_s, "total": TOTAL, "times": times[start:],
            "models": {name: {key: list(values)[start:] for key, values in series.items()}
                       for name, series in self._series.items()},
        }

    async def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # a sampling bug must not end the history for good
                logger.exception("metrics history: sampling failed")
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _point(before: _Reading, after: _Reading, elapsed: float) -> dict[str, Any]:
    def rate(field_name: str) -> float:
        return round(max(0.0, getattr(after, field_name) - getattr(before, field_name))
                     / elapsed, 4)

    return {
        "requests_per_s": rate("requests"), "tokens_per_s": rate("tokens"),
        "rate_limited_per_s": rate("rate_limited"), "errors_per_s": rate("errors"),
        "latency_p50_s": quantile(0.5, before.latency, after.latency),
        "latency_p95_s": quantile(0.95, before.latency, after.latency),
        "ttft_p50_s": quantile(0.5, before.ttft, after.ttft),
        "ttft_p95_s": quantile(0.95, before.ttft, after.ttft),
    }


def live_models(models: ModelRegistry) -> dict[str, dict[str, Any]]:
    """Each model's state right now (read from the routing state, not sampled)."""
    return {d.name: {"status": d.status.value, "engine": d.engine,
                     # with other gateway processes, their requests too (in the primary)
                     "in_flight": d.in_flight + d.in_flight_elsewhere,
                     "restarts": d.restarts, "last_error": d.detail or None}
            for d in models}


def history_answer(state: Any, since: float | None) -> dict[str, Any]:
    """The history since `since` (all of it when None) and the models' state now."""
    history: MetricsHistory | None = state.metrics_history
    live = live_models(state.registry)
    if history is None:
        return {"object": "metrics.history", "enabled": False, "times": [], "models": {},
                "interval_s": None, "window_s": None, "total": TOTAL, "live": live}
    return {**history.view(since), "enabled": True, "live": live}


async def history_endpoint(request: Request) -> JSONResponse:
    state = request.app.state.gateway
    raw = request.query_params.get("since")
    since = None
    if raw is not None:
        try:
            since = float(raw)
        except ValueError:
            raise InvalidRequestError(f"since must be a Unix time in seconds (got '{raw}')",
                                      param="since") from None
        if not math.isfinite(since):
            raise InvalidRequestError("since must be a finite number", param="since")
    if state.primary_metrics is not None:  # a follower: the server's history is the primary's
        return JSONResponse(await state.primary_metrics.history(since))
    return JSONResponse(history_answer(state, since))
