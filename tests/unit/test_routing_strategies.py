"""The replica strategies and the conversation-prefix key, on plain values."""

from __future__ import annotations

import collections
from dataclasses import dataclass

import pytest

from modelport.routing.prefix import PREFIX_CHARS, chat_prefix, prompt_prefix, request_prefix
from modelport.routing.strategies import (
    AffinityTable,
    least_busy,
    prefix_affinity,
    round_robin,
    weighted,
)


@dataclass
class Replica:
    name: str
    in_flight: int = 0
    capacity: int = 4
    weight: float = 1.0
    remote_in_flight: int = 0


def names(replicas) -> list[str]:
    return [r.name for r in replicas]


def test_least_busy_orders_by_load_relative_to_capacity():
    a, b, c = Replica("a", 3, 4), Replica("b", 3, 8), Replica("c", 0, 1)
    assert names(least_busy([a, b, c])) == ["c", "b", "a"]


def test_least_busy_lets_equally_idle_replicas_take_turns():
    replicas = [Replica("a"), Replica("b"), Replica("c")]
    firsts = [least_busy(replicas, turn)[0].name for turn in range(6)]
    assert firsts == ["a", "b", "c", "a", "b", "c"]


def test_least_busy_keeps_every_replica_for_the_retry_order():
    replicas = [Replica("a", 2), Replica("b", 1), Replica("c", 0)]
    assert sorted(names(least_busy(replicas, 1))) == ["a", "b", "c"]
    assert least_busy([], 3) == []


def test_least_busy_counts_requests_other_gateways_sent_to_a_replica():
    # Idle here, but three requests in flight on "a" through another gateway.
    shared, quiet = Replica("a", 0, remote_in_flight=3), Replica("b", 1)
    assert [least_busy([shared, quiet], turn)[0].name for turn in range(4)] == ["b"] * 4
    assert names(least_busy([Replica("a", 0), Replica("b", 1)])) == ["a", "b"]


def test_prefix_affinity_gives_way_when_other_gateways_keep_that_replica_busy():
    replicas = [Replica("a", 0, capacity=16), Replica("b", 1, capacity=16, remote_in_flight=4)]
    assert names(prefix_affinity(replicas, "b", margin=4)) == ["a", "b"]
    assert names(prefix_affinity(replicas, "b", margin=5)) == ["b", "a"]


def test_round_robin_ignores_load():
    replicas = [Replica("a", 0), Replica("b", 100)]
    assert [round_robin(replicas, turn)[0].name for turn in range(4)] == ["a", "b", "a", "b"]
    assert names(round_robin(replicas, 1)) == ["b", "a"]


def test_weighted_choice_follows_the_weights():
    replicas = [Replica("a", weight=1), Replica("b", weight=3)]
    draws = [i / 1000 for i in range(1000)]
    counts = collections.Counter(weighted(replicas, d)[0].name for d in draws)
    assert counts == {"a": 250, "b": 750}
    assert names(weighted(replicas, 0.9)) == ["b", "a"]  # the other follows, for retries


def test_weighted_never_picks_a_zero_weight_replica_unless_all_are_zero():
    replicas = [Replica("off", weight=0), Replica("on", weight=2)]
    assert {weighted(replicas, i / 100)[0].name for i in range(100)} == {"on"}
    idle = [Replica("x", weight=0), Replica("y", weight=0)]
    assert {weighted(idle, d)[0].name for d in (0.1, 0.9)} == {"x", "y"}


def test_prefix_affinity_returns_to_the_replica_that_served_the_prefix():
    replicas = [Replica("a", 0), Replica("b", 2)]
    assert names(prefix_affinity(replicas, "b", margin=4)) == ["b", "a"]


def test_prefix_affinity_gives_way_when_that_replica_is_too_busy():
    replicas = [Replica("a", 0, capacity=16), Replica("b", 5, capacity=16)]
    assert names(prefix_affinity(replicas, "b", margin=4)) == ["a", "b"]
    assert names(prefix_affinity(replicas, "b", margin=5)) == ["b", "a"]


def test_prefix_affinity_without_history_or_with_a_gone_replica_is_least_busy():
    replicas = [Replica("a", 1), Replica("b", 0)]
    assert names(prefix_affinity(replicas, None, margin=4)) == ["b", "a"]
    assert names(prefix_affinity(replicas, "removed", margin=4)) == ["b", "a"]


def test_affinity_table_forgets_the_oldest_prefix_and_removed_replicas():
    table = AffinityTable(size=2)
    table.remember("p1", "a")
    table.remember("p2", "b")
    assert table.last("p1") == "a"  # p1 is now the most recent
    table.remember("p3", "b")
    assert (table.last("p2"), table.last("p1"), table.last("p3")) == (None, "a", "b")
    table.forget_replica("b")
    assert (table.last("p3"), len(table)) == (None, 1)
    assert table.last(None) is None


def conversation(*turns: str, system: str = "You are terse.") -> list[dict]:
    messages = [{"role": "system", "content": system}]
    for index, text in enumerate(turns):
        messages.append({"role": "user" if index % 2 == 0 else "assistant", "content": text})
    return messages


def test_turns_of_one_conversation_share_a_prefix_and_others_do_not():
    first = chat_prefix(conversation("Tell me about rivers."))
    follow_up = chat_prefix(conversation("Tell me about rivers.", "Rivers flow.", "And lakes?"))
    other = chat_prefix(conversation("Tell me about mountains."))
    other_system = chat_prefix(conversation("Tell me about rivers.", system="Be verbose."))
    assert first == follow_up
    assert len({first, other, other_system}) == 3


def test_content_parts_count_as_their_text():
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hi "},
                                           {"type": "text", "text": "there"}]}]
    assert chat_prefix(parts) == chat_prefix([{"role": "user", "content": "Hi there"}])


def test_a_long_opening_is_hashed_only_up_to_the_bound():
    long_a = "x" * PREFIX_CHARS + "a"
    long_b = "x" * PREFIX_CHARS + "b"
    assert chat_prefix([{"role": "user", "content": long_a}]) == \
        chat_prefix([{"role": "user", "content": long_b}])
    assert prompt_prefix(long_a) == prompt_prefix([long_b, "other"])


@pytest.mark.parametrize("body", [{}, {"messages": "no"}, {"messages": []},
                                  {"messages": [1, 2]}, {"prompt": ""}, {"prompt": 5},
                                  {"prompt": []}, {"input": "an embedding"}])
def test_bodies_without_a_usable_opening_have_no_prefix(body):
    assert request_prefix(body) is None


def test_request_prefix_reads_chat_and_completion_bodies():
    assert request_prefix({"messages": conversation("hi")}) == chat_prefix(conversation("hi"))
    assert request_prefix({"prompt": "Once upon"}) == prompt_prefix("Once upon")
