"""Retries, Retry-After, fallbacks, cool-down and timeouts through the real gateway app.

A scripted fake upstream answers in turn; each test counts the requests it received, so
a missing retry (or an extra one) fails the test.
"""

from __future__ import annotations

import socket
import time

import pytest

from support.server import free_port
from support.vendor_fakes import InProcessGateway, Reply, sse, streamed_text

OK = {"id": "c1", "object": "chat.completion", "created": 0, "model": "upstream-id",
      "choices": [{"index": 0, "finish_reason": "stop",
                   "message": {"role": "assistant", "content": "fine"}}],
      "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
BUSY = {"error": {"message": "busy", "type": "server_error"}}


def chunk(text):
    return {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "upstream-id",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


@pytest.fixture
def make_gateway():
    made = []

    def make(*models):
        gateway = InProcessGateway({"models": list(models)})
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.close()


def online(name, url, **fields):
    return {"name": name, "engine": "openai", "base_url": url,
            "retries": {"attempts": 3, "backoff": 0.01}, **fields}


def test_5xx_is_retried_until_an_answer(fake, make_gateway):
    gateway = make_gateway(online("flaky", fake.url + "/v1"))
    fake.script(Reply(status=503, json=BUSY), Reply(status=502, json=BUSY), Reply(json=OK))
    response = gateway.chat("flaky")
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "fine"
    assert len(fake.requests) == 3


def test_retries_stop_after_the_configured_attempts(fake, make_gateway):
    gateway = make_gateway(online("flaky", fake.url + "/v1", retries={"attempts": 2,
                                                                        "backoff": 0.01}))
    fake.script(*[Reply(status=500, json=BUSY)] * 3)
    assert gateway.chat("flaky").status_code == 502
    assert len(fake.requests) == 2


def test_retry_after_is_waited_out(fake, make_gateway):
    gateway = make_gateway(online("limited", fake.url + "/v1"))
    fake.script(Reply(status=429, json=BUSY, headers={"Retry-After": "1"}), Reply(json=OK))
    started = time.monotonic()
    assert gateway.chat("limited").status_code == 200
    assert time.monotonic() - started >= 0.95  # the backoff alone would be ~10 ms
    assert len(fake.requests) == 2


def test_a_rate_limited_model_falls_back_and_the_answer_names_the_fallback(fake, make_gateway):
    gateway = make_gateway(
        online("primary", fake.url + "/primary/v1", fallbacks=["backup"]),
        online("backup", fake.url + "/backup/v1", upstream_model="upstream-id"))
    fake.script(Reply(status=429, json=BUSY, headers={"Retry-After": "120"}), Reply(json=OK))
    started = time.monotonic()
    response = gateway.chat("primary")
    assert time.monotonic() - started < 5  # a 2-minute Retry-After is not waited for
    assert response.status_code == 200
    assert response.json()["model"] == "backup"
    assert response.headers["x-modelport-model"] == "backup"
    assert response.headers["x-modelport-fallback-from"] == "primary"
    assert [r.path for r in fake.requests] == ["/primary/v1/chat/completions",
                                               "/backup/v1/chat/completions"]


def test_an_unreachable_model_falls_back_in_order(fake, make_gateway):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    gateway = make_gateway(
        online("dead", dead, fallbacks=["also-dead", "backup"]),
        online("also-dead", dead), online("backup", fake.url + "/backup/v1"))
    fake.script(Reply(json=OK))
    response = gateway.chat("dead")
    assert response.status_code == 200 and response.json()["model"] == "backup"


def test_a_model_that_keeps_failing_is_cooled_down_instead_of_hammered(fake, make_gateway):
    gateway = make_gateway(online("sick", fake.url + "/v1", retries={"attempts": 1},
                                  cooldown={"failures": 2, "seconds": 60}))
    fake.script(*[Reply(status=500, json=BUSY)] * 5)
    assert [gateway.chat("sick").status_code for _ in range(2)] == [502, 502]
    cooled = gateway.chat("sick")
    assert cooled.status_code == 503
    assert cooled.json()["error"]["code"] == "model_cooling_down"
    assert 55 <= int(cooled.headers["retry-after"]) <= 60
    assert len(fake.requests) == 2  # the third request never reached the upstream


def test_a_silent_upstream_times_out_without_retry_and_falls_back(fake, make_gateway):
    gateway = make_gateway(
        online("slow", fake.url + "/slow/v1", read_timeout=0.3),
        online("slow-with-backup", fake.url + "/slow/v1", read_timeout=0.3,
               fallbacks=["backup"]),
        online("backup", fake.url + "/backup/v1"))
    fake.script(Reply(json=OK, hang=3))
    started = time.monotonic()
    response = gateway.chat("slow")
    assert response.status_code == 504 and time.monotonic() - started < 2
    assert len(fake.requests) == 1  # a read timeout is not repeated on the same model
    fake.script(Reply(json=OK, hang=3), Reply(json=OK))
    response = gateway.chat("slow-with-backup")
    assert response.status_code == 200 and response.json()["model"] == "backup"


@pytest.fixture
def unaccepting_port():
    """A port whose listen backlog is full, so a new connection hangs (never refused)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    time.sleep(0.1)
    yield port
    for sock in [*fillers, server]:
        sock.close()


def test_connect_timeout_is_per_model_and_retried(make_gateway, unaccepting_port):
    gateway = make_gateway(online("far", f"http://127.0.0.1:{unaccepting_port}/v1",
                                  connect_timeout=0.3,
                                  retries={"attempts": 2, "backoff": 0.01}))
    started = time.monotonic()
    response = gateway.chat("far")
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert 0.55 < elapsed < 3  # two tries of 0.3 s each: nothing was sent, so it is retried


def test_a_stream_that_fails_before_its_first_byte_is_retried(fake, make_gateway):
    gateway = make_gateway(online("flaky", fake.url + "/v1"))
    fake.script(Reply(status=503, json=BUSY),
                Reply(events=sse(chunk("Hel"), chunk("lo"))))
    response, events = gateway.stream("flaky")
    assert response.status_code == 200
    assert streamed_text(events) == "Hello" and events[-1] == "[DONE]"
    assert {e["model"] for e in events if isinstance(e, dict)} == {"flaky"}
    assert len(fake.requests) == 2


def test_a_stream_broken_after_text_was_sent_is_never_replayed(fake, make_gateway):
    gateway = make_gateway(online("broken", fake.url + "/v1", fallbacks=["backup"]),
                           online("backup", fake.url + "/backup/v1"))
    fake.script(Reply(events=sse(chunk("partial"), done=False), drop_after_events=True),
                Reply(events=sse(chunk("again"))))
    response, events = gateway.stream("broken")
    assert streamed_text(events) == "partial"  # no second copy, no fallback text mixed in
    assert "error" in events[-2] and events[-1] == "[DONE]"
    assert len(fake.requests) == 1
