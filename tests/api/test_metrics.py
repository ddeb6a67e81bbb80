"""/metrics through the real app: the Prometheus text parses with prometheus_client's own
parser and its counters match the requests sent."""

from __future__ import annotations

import asyncio

import pytest
from support.metrics import ANSWER, CHUNK, USAGE_CHUNK, parse_samples, value
from support.vendor_fakes import InProcessGateway, Reply, sse

KEY = "sk-test-upstream"


@pytest.fixture
def gateway(fake):
    gw = InProcessGateway({"models": [
        {"name": "remote", "engine": "openai", "base_url": fake.url + "/v1", "api_key": KEY,
         "retries": {"attempts": 1}, "cooldown": {"failures": 1000},
         "max_concurrency": 1, "max_queue": 0},
    ]})
    yield gw
    gw.close()


def samples(gateway):
    response = gateway.call("GET", "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_samples(response.text)


CHAT = "/v1/chat/completions"


def test_counters_match_the_requests_sent(gateway, fake):
    fake.script(Reply(json=ANSWER), Reply(json=ANSWER),
                Reply(events=sse(CHUNK, USAGE_CHUNK)))
    for _ in range(2):
        assert gateway.chat("remote").status_code == 200
    assert gateway.stream("remote")[0].status_code == 200
    assert gateway.chat("no-such-model").status_code == 404

    found = samples(gateway)
    assert value(found, "modelport_requests_total", model="remote", endpoint=CHAT,
                 status="200") == 3
    # A model name nobody serves is not a label value (clients choose it).
    assert value(found, "modelport_requests_total", model="-", endpoint=CHAT, status="404") == 1
    assert value(found, "modelport_tokens_total", model="remote", kind="prompt") == 21
    assert value(found, "modelport_tokens_total", model="remote", kind="completion") == 9
    assert value(found, "modelport_request_duration_seconds_count", model="remote",
                 endpoint=CHAT) == 3
    assert value(found, "modelport_time_to_first_token_seconds_count", model="remote",
                 endpoint=CHAT) == 1
    assert value(found, "modelport_requests_in_flight", model="remote") == 0
    assert value(found, "modelport_model_status", model="remote", status="ready") == 1
    assert value(found, "modelport_replica_ready", model="remote", replica="remote#0") == 1
    assert value(found, "modelport_replica_in_flight", model="remote", replica="remote#0") == 0


def test_unknown_routes_share_one_endpoint_label(gateway):
    for path in ("/v1/a", "/v1/b", "/nowhere"):
        assert gateway.call("POST", path, json={}).status_code == 404
    found = samples(gateway)
    assert value(found, "modelport_requests_total", model="-", endpoint="other", status="404") == 3
    assert not any(dict(labels).get("endpoint") in ("/v1/a", "/nowhere") for _, labels in found)


def test_upstream_failures_and_429s_are_counted_by_kind_and_reason(gateway, fake):
    fake.script(Reply(status=500, json={"error": {"message": "boom"}}))
    assert gateway.chat("remote").status_code == 502

    async def two_at_once():
        fake.script(Reply(json=ANSWER, hang=0.5))
        return await asyncio.gather(*(gateway._request("POST", CHAT, json={
            "model": "remote", "messages": [{"role": "user", "content": "Hi"}]})
            for _ in range(2)))

    statuses = sorted(r.status_code for r in gateway.run(two_at_once()))
    assert statuses == [200, 429]
    found = samples(gateway)
    assert value(found, "modelport_upstream_errors_total", model="remote",
                 kind="UpstreamError") == 1
    assert value(found, "modelport_rate_limited_total", model="remote", reason="queue_full") == 1


def test_health_probes_and_scrapes_are_not_counted_as_traffic(gateway):
    gateway.call("GET", "/health")
    samples(gateway)
    found = samples(gateway)
    assert not any(name == "modelport_requests_total" for name, _ in found)


def test_metrics_auth_puts_the_scrape_behind_the_master_key(fake):
    master = "mk-metrics-test-0123456789"
    gw = InProcessGateway({"server": {"master_key": master, "metrics_auth": True}, "models": [
        {"name": "remote", "engine": "openai", "base_url": fake.url + "/v1", "api_key": KEY}]})
    try:
        assert gw.call("GET", "/metrics").status_code == 401
        wrong = gw.call("GET", "/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["message"]
        scraped = gw.call("GET", "/metrics", headers={"Authorization": f"Bearer {master}"})
        assert scraped.status_code == 200 and "modelport_requests_in_flight" in scraped.text
    finally:
        gw.close()
