"""The last hour of metrics per model (api.metrics_history): samples computed from the
gateway's own counters, and GET /admin/metrics/history behind the master key."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from modelport.api.app import build_app
from modelport.api.metrics_history import TOTAL, quantile
from modelport.config import parse_config
from modelport.gateway.build import build_state
from support.metrics import ANSWER, CHUNK, USAGE_CHUNK
from support.vendor_fakes import InProcessGateway, Reply, sse

MASTER = "mk-test-master-key-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture
def gateway(fake):
    gw = InProcessGateway({"models": [
        {"name": "remote", "engine": "openai", "base_url": fake.url + "/v1",
         "retries": {"attempts": 1}, "cooldown": {"failures": 1000},
         "max_concurrency": 1, "max_queue": 0},
        {"name": "idle", "engine": "openai", "base_url": fake.url + "/v1"},
    ]})
    yield gw
    gw.close()


def test_quantile_interpolates_inside_the_bucket_of_the_observations_between_readings():
    before = {0.1: 10.0, 0.5: 10.0, 1.0: 10.0, float("inf"): 10.0}
    # Since `before`: 4 observations in (0.1, 0.5], 4 in (0.5, 1.0].
    after = {0.1: 10.0, 0.5: 14.0, 1.0: 18.0, float("inf"): 18.0}
    assert quantile(0.5, before, after) == 0.5
    assert quantile(0.25, before, after) == pytest.approx(0.3)
    assert quantile(0.75, before, after) == pytest.approx(0.75)
    assert quantile(0.5, after, after) is None  # nothing observed in between
    past_the_last_bound = {0.1: 0.0, 0.5: 0.0, 1.0: 0.0, float("inf"): 2.0}
    assert quantile(0.5, {}, past_the_last_bound) == 1.0


def test_a_sample_holds_the_rates_and_percentiles_of_the_requests_in_between(gateway, fake):
    history = gateway.state.metrics_history
    history.sample(now=1000.0)  # the baseline
    assert history.view()["times"] == []
    fake.script(Reply(json=ANSWER), Reply(json=ANSWER), Reply(events=sse(CHUNK, USAGE_CHUNK)))
    assert gateway.chat("remote").status_code == 200
    assert gateway.chat("remote").status_code == 200
    assert gateway.stream("remote")[0].status_code == 200
    history.sample(now=1005.0)
    history.sample(now=1010.0)

    view = history.view()
    assert view["times"] == [1005.0, 1010.0]
    remote = view["models"]["remote"]
    assert remote["requests_per_s"] == [0.6, 0.0]
    assert remote["tokens_per_s"] == [6.0, 0.0]  # three answers of 10 tokens in 5 s
    assert remote["latency_p50_s"][0] > 0 and remote["latency_p50_s"][1] is None
    assert remote["ttft_p50_s"][0] > 0 and remote["ttft_p95_s"][1] is None
    assert remote["in_flight"] == [0, 0]
    assert view["models"]["idle"]["requests_per_s"] == [0.0, 0.0]
    assert view["models"][TOTAL]["requests_per_s"] == [0.6, 0.0]
    assert history.view(since=1005.0)["times"] == [1010.0]


def test_the_ring_keeps_one_window_of_samples(gateway):
    history = gateway.state.metrics_history
    capacity = int(history.window_s / history.interval_s)
    for step in range(capacity + 3):
        history.sample(now=float(step * history.interval_s))
    view = history.view()
    assert len(view["times"]) == capacity
    assert view["times"][-1] == (capacity + 2) * history.interval_s
    assert len(view["models"]["remote"]["requests_per_s"]) == capacity


def _app(tmp_path, **server):
    config = {"server": {"master_key": MASTER, "database_url":
                         f"sqlite:///{tmp_path}/db.sqlite", **server},
              "models": [{"name": "chat-a", "engine": "openai",
                          "base_url": "http://127.0.0.1:9/v1"}]}
    return TestClient(build_app(build_state(parse_config(config))))


def test_the_history_answers_only_to_the_master_key(tmp_path):
    with _app(tmp_path) as client:
        assert client.get("/admin/metrics/history").status_code == 401
        refused = client.get("/admin/metrics/history", headers={"Authorization": "Bearer no"})
        assert refused.status_code == 401
        answer = client.get("/admin/metrics/history", headers=ADMIN)
        assert answer.status_code == 200
        body = answer.json()
        assert body["enabled"] is True and body["interval_s"] > 0
        assert body["live"]["chat-a"] == {"status": "ready", "engine": "openai", "in_flight": 0,
                                         "restarts": 0, "last_error": None}
        bad = client.get("/admin/metrics/history?since=yesterday", headers=ADMIN)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "since"


def test_without_metrics_the_history_says_so(tmp_path):
    with _app(tmp_path, metrics=False) as client:
        body = client.get("/admin/metrics/history", headers=ADMIN).json()
    assert body["enabled"] is False and body["times"] == [] and "chat-a" in body["live"]


def test_errors_count_every_answer_of_400_and_up_to_a_model_as_the_usage_rows_do(gateway, fake):
    """The console's Metrics "errors" and its Usage error count read the same answers: a
    usage row is written for each request that named a model, and counts as an error with
    a status of 400 or more; an upstream failure and a 429 both count (429s also on their
    own line). A body refused before its model is read has no usage row and no model here."""
    history = gateway.state.metrics_history
    history.sample(now=1000.0)
    fake.script(Reply(json=ANSWER),
                Reply(status=500, json={"error": {"message": "boom"}}),
                Reply(status=429, json={"error": {"message": "slow down"}}))
    statuses = [gateway.chat("remote").status_code for _ in range(3)]
    assert gateway.chat("remote", temperature="hot").status_code == 400
    history.sample(now=1010.0)
    assert statuses == [200, 502, 429]
    remote = history.view()["models"]["remote"]
    assert remote["errors_per_s"] == [0.2]  # the 502 and the 429, in 10 s
    assert remote["requests_per_s"] == [0.3]
