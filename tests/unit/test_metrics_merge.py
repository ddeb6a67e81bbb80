"""With several gateway processes, /metrics shows the server's totals: a follower's counts
travel as a snapshot and add up with the primary's; a follower that exits leaves its
counts behind, so no counter goes back."""

from __future__ import annotations

import json

from prometheus_client import generate_latest
from support.metrics import parse_samples, value

from modelport.api.access_log import AccessRecord
from modelport.api.metrics import GatewayMetrics, PeerStats
from modelport.errors import RateLimitError, UpstreamError
from modelport.routing.registry import ModelRegistry

CHAT = "/v1/chat/completions"


def answered(metrics: GatewayMetrics, count: int, latency_s: float = 0.02) -> None:
    for _ in range(count):
        record = AccessRecord("POST", CHAT, status=200, prompt_tokens=5, completion_tokens=2)
        record.ended = record.started + latency_s
        metrics.observe(record)


def refused(metrics: GatewayMetrics) -> None:
    metrics.observe(AccessRecord("POST", CHAT, status=429,
                                 error=RateLimitError("slow down", code="rpm_exceeded")))


def failed(metrics: GatewayMetrics) -> None:
    metrics.observe(AccessRecord("POST", CHAT, status=502, error=UpstreamError("reset")))


def scraped(metrics: GatewayMetrics) -> dict:
    return parse_samples(generate_latest(metrics.registry).decode())


def process(peers=None) -> GatewayMetrics:  # noqa: ANN001
    return GatewayMetrics(ModelRegistry([]), [CHAT], peers=peers)


def test_a_snapshot_survives_json_and_adds_up_with_the_own_counts():
    follower = process()
    answered(follower, 3, latency_s=0.02)
    refused(follower)
    failed(follower)
    snapshot = json.loads(json.dumps(follower.snapshot()))  # as the sync carries it
    primary = process(peers=lambda: [snapshot])
    answered(primary, 2, latency_s=3.0)
    found = scraped(primary)
    labels = {"model": "-", "endpoint": CHAT}
    assert value(found, "modelport_requests_total", status="200", **labels) == 5
    assert value(found, "modelport_requests_total", status="429", **labels) == 1
    assert value(found, "modelport_tokens_total", model="-", kind="prompt") == 25
    assert value(found, "modelport_rate_limited_total", model="-", reason="rpm_exceeded") == 1
    assert value(found, "modelport_upstream_errors_total", model="-", kind="UpstreamError") == 1
    duration = "modelport_request_duration_seconds_bucket"
    assert value(found, duration, le="0.025", **labels) == 3 + 2  # the follower's + 2 failures
    assert value(found, duration, le="5.0", **labels) == 7  # and the primary's slow ones
    assert value(found, "modelport_request_duration_seconds_count", **labels) == 7
    # The primary's own counts are untouched by the merge: scraping twice adds nothing.
    assert scraped(primary) == found


def test_without_peers_the_counts_are_the_process_own():
    alone = process(peers=lambda: [])
    answered(alone, 2)
    found = scraped(alone)
    assert value(found, "modelport_requests_total", model="-", endpoint=CHAT, status="200") == 2


def test_a_follower_that_exits_leaves_its_counts_and_a_new_one_adds_to_them():
    peers = PeerStats()
    primary = process(peers=peers.snapshots)
    first, second = process(), process()
    answered(first, 4)
    peers.update(101, first.snapshot())
    answered(first, 1)
    peers.update(101, first.snapshot())  # a later sync replaces the earlier one
    requests = {"model": "-", "endpoint": CHAT, "status": "200"}
    assert value(scraped(primary), "modelport_requests_total", **requests) == 5
    peers.retire(101)
    assert value(scraped(primary), "modelport_requests_total", **requests) == 5
    answered(second, 2)
    peers.update(102, second.snapshot())
    peers.retire(999)  # a process that never synced: nothing to keep
    assert value(scraped(primary), "modelport_requests_total", **requests) == 7


def test_requests_waiting_to_be_counted_show_at_the_next_scrape_and_never_pile_up():
    metrics = process()
    answered(metrics, 3)
    assert value(scraped(metrics), "modelport_requests_total",
                 model="-", endpoint=CHAT, status="200") == 3
    answered(metrics, 5000)  # nobody scrapes: counted in batches meanwhile
    assert len(metrics._pending) < 1024
    assert value(scraped(metrics), "modelport_requests_total",
                 model="-", endpoint=CHAT, status="200") == 5003
    answered(metrics, 2)  # a follower's snapshot counts what is waiting too
    assert ["-", CHAT, "200", 5005] in metrics.snapshot()["requests"]
