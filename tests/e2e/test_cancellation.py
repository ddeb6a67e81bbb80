"""A client that disconnects mid-stream frees the worker's slot (the generation stops)."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from support.models import TINY
from support.server import worker_secret

pytestmark = pytest.mark.e2e


def slots_busy(worker_url: str, headers: dict[str, str]) -> int:
    slots = httpx.get(worker_url.removesuffix("/v1") + "/slots", headers=headers,
                      timeout=5).json()
    return sum(1 for slot in slots if slot["is_processing"])


def test_disconnect_cancels_generation_in_worker(server):
    worker = server.health()["models"][TINY]["worker"]
    worker_url = worker["url"]
    key = {"Authorization": f"Bearer {worker_secret(worker['pid'])}"}  # workers need it
    body = {"model": TINY, "messages": [{"role": "user", "content": "Tell a very long story."}],
            "max_tokens": 900, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.base_url + "/chat/completions", json=body, timeout=60) as r:
        received, seen_busy = 0, False
        for line in r.iter_lines():
            received += line.startswith("data: ")
            if received % 5 == 0 and slots_busy(worker_url, key) == 1:
                seen_busy = True
                break
            if received > 200:
                break
        assert seen_busy, "the generation should be running while tokens stream"
    # Leaving the `with` closed the connection mid-stream; 900 tokens would take many seconds.
    deadline = time.monotonic() + 3
    while slots_busy(worker_url, key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slots_busy(worker_url, key) == 0, "the worker kept generating for a departed client"
    deadline = time.monotonic() + 3
    while server.health()["models"][TINY]["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.health()["models"][TINY]["in_flight"] == 0
    # The freed slot serves the next request at once.
    reply = httpx.post(server.base_url + "/chat/completions", timeout=30, json={
        "model": TINY, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
    assert reply.status_code == 200


def test_non_streaming_disconnect_cancels_generation_and_frees_the_slot(server):
    """A client that gives up on a non-streaming answer stops the generation too (it used
    to run to its end, holding the slot and the model's in-flight count)."""
    worker = server.health()["models"][TINY]["worker"]
    worker_url = worker["url"]
    key = {"Authorization": f"Bearer {worker_secret(worker['pid'])}"}  # workers need it
    body = json.dumps({"model": TINY, "max_tokens": 900, "ignore_eos": True,
                       "messages": [{"role": "user", "content": "Tell a very long story."}]})
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request.encode())
        deadline = time.monotonic() + 20
        while not slots_busy(worker_url, key) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slots_busy(worker_url, key) == 1, "the generation should be running"
    # The socket is closed: 900 tokens would take many seconds more.
    deadline = time.monotonic() + 3
    while slots_busy(worker_url, key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slots_busy(worker_url, key) == 0, "the worker kept generating for a departed client"
    deadline = time.monotonic() + 3
    while server.health()["models"][TINY]["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.health()["models"][TINY]["in_flight"] == 0
    deadline = time.monotonic() + 3
    while "status=499" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "client_disconnected" in server.log()
