"""/metrics of a real `modelport serve`: gateway counters follow real requests, and the
llama.cpp workers' own metrics are re-exported under the model's name."""

from __future__ import annotations

import httpx

from support.metrics import parse_samples, value
from support.models import CHAT, EMBED


def scrape(server):
    response = httpx.get(server.url + "/metrics", timeout=30)
    assert response.status_code == 200
    return parse_samples(response.text)


def test_counters_follow_real_requests(server, client):
    before = scrape(server)
    for _ in range(2):
        client.chat.completions.create(model=CHAT, max_tokens=4,
                                       messages=[{"role": "user", "content": "Hi"}])
    stream = client.chat.completions.create(model=CHAT, max_tokens=4, stream=True,
                                            messages=[{"role": "user", "content": "Hi"}])
    assert list(stream)
    client.embeddings.create(model=EMBED, input=["a", "b"])
    after = scrape(server)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    chat = {"model": CHAT, "endpoint": "/v1/chat/completions"}
    assert grew("modelport_requests_total", status="200", **chat) == 3
    assert grew("modelport_time_to_first_token_seconds_count", **chat) == 1
    assert grew("modelport_tokens_total", model=CHAT, kind="completion") > 0
    assert grew("modelport_requests_total", model=EMBED, endpoint="/v1/embeddings",
                status="200") == 1
    assert value(after, "modelport_requests_in_flight", model=CHAT) == 0


def test_llamacpp_worker_metrics_carry_the_model_name(server, client):
    client.chat.completions.create(model=CHAT, max_tokens=4,
                                   messages=[{"role": "user", "content": "Hi"}])
    found = scrape(server)
    worker_series = {name: dict(labels) for name, labels in found
                     if name.startswith("llamacpp:")}
    assert worker_series, "no llama.cpp worker metrics re-exported"
    assert all("model" in labels for labels in worker_series.values())
    assert value(found, "llamacpp:tokens_predicted_total", model=CHAT) > 0
