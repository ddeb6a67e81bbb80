"""The in-memory store of Responses API answers stays within its count and size bounds,
dropping the least recently used first."""

from __future__ import annotations

from modelport.api.response_store import ResponseStore


def response(response_id: str, text: str = "x") -> dict:
    return {"id": response_id, "object": "response", "output": [{"text": text}]}


def test_the_least_recently_used_response_goes_first_when_the_count_is_reached():
    store = ResponseStore(max_responses=2)
    store.put(response("a"), [])
    store.put(response("b"), [])
    assert store.get("a") is not None  # "a" is now more recent than "b"
    store.put(response("c"), [])
    assert len(store) == 2 and store.get("b") is None
    assert store.get("a") is not None and store.get("c") is not None


def test_the_size_bound_evicts_and_an_answer_bigger_than_the_store_is_not_kept():
    store = ResponseStore(max_responses=100, max_bytes=600)
    store.put(response("a", "x" * 200), [{"role": "user", "content": "hi"}])
    store.put(response("b", "y" * 200), [])
    assert store.get("a") is not None and store.get("b") is not None
    store.put(response("c", "z" * 200), [])
    assert store.get("a") is None and len(store) == 2
    store.put(response("huge", "h" * 1000), [])
    assert store.get("huge") is None and len(store) == 2


def test_items_come_back_and_delete_frees_the_entry():
    store = ResponseStore()
    items = [{"role": "user", "content": "hi"}, {"type": "message", "role": "assistant"}]
    store.put(response("a"), items)
    assert store.get("a").items == items
    assert store.delete("a") is True and store.delete("a") is False
    assert store.get("a") is None and len(store) == 0
