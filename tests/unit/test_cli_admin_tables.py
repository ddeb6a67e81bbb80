"""The tables of `modelport keys` and `modelport usage`, rendered as a terminal shows them."""

from __future__ import annotations

from rich.console import Console

from modelport.cli.tables import key_detail, keys_table, usage_table

KEY = {"id": "key_0123456789abcdef", "name": "analytics", "key_prefix": "sk-mp-AbCd",
       "models": ["smollm2"], "rpm": 30, "tpm": None, "max_parallel": 2,
       "budget_tokens": 1_000_000, "budget_period": "month", "expires_at": None,
       "revoked": False, "expired": False, "created_at": "2026-12-01T00:00:00+00:00",
       "metadata": {"owner": "ana"}}


def render(table) -> str:  # noqa: ANN001
    console = Console(width=100, record=True)
    console.print(table)
    return console.export_text()


def test_keys_table_shows_limits_and_state():
    text = render(keys_table("http://gw", [KEY, {**KEY, "id": "key_2", "name": "old",
                                                 "models": None, "revoked": True}]))
    assert "analytics" in text and "sk-mp-AbCd…" in text and "smollm2" in text
    assert "30 rpm" in text and "2 parallel" in text and "1,000,000 tokens/month" in text
    assert "active" in text and "revoked" in text and "all" in text


def test_key_detail_shows_the_budget_used():
    text = render(key_detail({**KEY, "tokens_used": 1234,
                              "tokens_used_since": "2026-12-01T00:00:00+00:00"}))
    assert "1,234 since 2026-12-01 of 1,000,000" in text and "owner=ana" in text


def test_usage_table_names_keys_and_marks_requests_without_one():
    report = {"group_by": "key", "since": "2026-11-24T00:00:00+00:00", "until": None, "data": [
        {"key": "key_0123456789abcdef", "name": "analytics", "requests": 1200, "errors": 3,
         "prompt_tokens": 50_000, "completion_tokens": 7_000, "cached_tokens": 0,
         "total_tokens": 57_000, "cost": 0.0213, "mean_latency_ms": 812.0},
        {"key": None, "name": None, "requests": 4, "errors": 0, "prompt_tokens": 10,
         "completion_tokens": 2, "cached_tokens": 0, "total_tokens": 12, "cost": None,
         "mean_latency_ms": 5.0}]}
    text = render(usage_table("http://gw", report))
    assert "by key, since 2026-11-24T00:00" in text
    assert "analytics" in text and "1,200" in text and "57,000" in text and "0.0213" in text
    assert "(no key)" in text
