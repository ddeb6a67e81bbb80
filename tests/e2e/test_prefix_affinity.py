"""prefix_affinity against round_robin, in one run over the same two-replica setup: the
follow-up turns of interleaved conversations go back to the replica that served their
opening (its llama.cpp prompt cache holds the long system prompt), and so their first
token comes sooner than when the turn lands on the replica that never saw the prompt."""

from __future__ import annotations

import statistics
import time

import httpx
import pytest

from support.models import SMOLLM2
from support.server import ModelportServer, wait_for

STICKY, ROTATING = "sticky", "rotating"
CONVERSATIONS = 4
TOPICS = ("gardening", "astronomy", "sailing", "baking")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    worker = {"engine": "llamacpp", "path": SMOLLM2, "replicas": 2, "threads": 1,
              "context_length": 2048, "parallel": 2}
    instance = ModelportServer({"models": [
        {"name": STICKY, "strategy": "prefix_affinity", **worker},
        {"name": ROTATING, "strategy": "round_robin", **worker},
    ]}, tmp_path_factory.mktemp("affinity"))
    instance.start()
    try:
        wait_for(lambda: all(r["state"] == "ready" for m in instance.health()["models"].values()
                             for r in m["replicas"]), 180, "every replica ready")
        yield instance
    finally:
        instance.stop()


def system_prompt(topic: str) -> str:
    """A few hundred tokens of instructions, different for each conversation."""
    rules = " ".join(f"Rule {n}: when the user asks about {topic}, answer in one short "
                     f"sentence, mention {topic} by name, and never repeat rule {n}."
                     for n in range(1, 13))
    return f"You are a helpful assistant who only talks about {topic}. {rules}"


def turn(server, model: str, messages: list[dict]) -> tuple[str, float, str]:
    """Send one turn; the replica that answered, the time to its first token, the text."""
    started = time.monotonic()
    first_token = None
    text = []
    with httpx.stream("POST", server.base_url + "/chat/completions", timeout=120, json={
            "model": model, "messages": messages, "stream": True, "max_tokens": 8,
            "temperature": 0}) as reply:
        assert reply.status_code == 200, reply.read()
        replica = reply.headers["x-modelport-replica"]
        for line in reply.iter_lines():
            if line.startswith("data: {") and '"content":"' in line.replace(" ", ""):
                first_token = first_token or time.monotonic() - started
                text.append(line)
    assert first_token is not None
    return replica, first_token, "".join(text)


def conversation_run(server, model: str) -> tuple[dict[int, str], dict[int, list[str]], list[float]]:
    """Four conversations: every opening first, then a follow-up of each. The follow-ups
    come in a rotated order (conversation 1 first), as real traffic does not line up with
    a rotation; under round_robin each of them lands on the replica that did not serve
    its opening."""
    histories = {i: [{"role": "system", "content": system_prompt(TOPICS[i])},
                     {"role": "user", "content": f"Tell me one fact about {TOPICS[i]}."}]
                 for i in range(CONVERSATIONS)}
    opened_on: dict[int, str] = {}
    followed_on: dict[int, list[str]] = {i: [] for i in range(CONVERSATIONS)}
    follow_up_ttft: list[float] = []
    for i in range(CONVERSATIONS):
        opened_on[i], _, _ = turn(server, model, histories[i])
    for i in [*range(1, CONVERSATIONS), 0]:
        histories[i] += [{"role": "assistant", "content": f"A fact about {TOPICS[i]}."},
                         {"role": "user", "content": "And another one?"}]
        replica, ttft, _ = turn(server, model, histories[i])
        followed_on[i].append(replica)
        follow_up_ttft.append(ttft)
    return opened_on, followed_on, follow_up_ttft


def test_follow_ups_return_to_their_replica_and_start_sooner_than_round_robin(server):
    opened, followed, sticky_ttft = conversation_run(server, STICKY)
    for i in range(CONVERSATIONS):
        assert followed[i] == [opened[i]], (i, opened, followed)
    assert len(set(opened.values())) == 2  # the openings themselves were spread

    rotating_opened, rotating_followed, rotating_ttft = conversation_run(server, ROTATING)
    assert all(rotating_followed[i] != [rotating_opened[i]] for i in range(CONVERSATIONS))
    sticky, rotating = statistics.median(sticky_ttft), statistics.median(rotating_ttft)
    assert sticky < rotating, (sticky_ttft, rotating_ttft)
