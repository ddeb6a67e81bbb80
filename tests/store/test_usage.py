"""UsageRecorder on SQLite and on a real PostgreSQL: rows queued without waiting, written
in batches by the background task, all written on close, aggregated by key, model, day."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from modelport.config import parse_config
from modelport.store import Store, UsageRecorder, UsageRow
from modelport.store.schema import USAGE_COLUMNS
from modelport.store.schema import usage as usage_table

CONFIG_MODELS = [
    {"name": "priced", "engine": "openai", "base_url": "http://127.0.0.1:9/v1",
     "aliases": ["priced-alias"], "price": {"input": 0.5, "output": 1.5}},
    {"name": "free", "engine": "openai", "base_url": "http://127.0.0.1:9/v1"},
]


def _store(url: str) -> Store:
    return Store.from_config(parse_config({"server": {"database_url": url},
                                           "models": CONFIG_MODELS}))


async def _count(store: Store) -> int:
    async with store._engine.connect() as connection:
        return (await connection.execute(select(func.count()).select_from(usage_table))
                ).scalar_one()


def _row(**fields) -> UsageRow:  # noqa: ANN003
    return UsageRow(**{"model": "free", "endpoint": "/v1/chat/completions", "status": 200,
                       **fields})


def test_every_field_is_stored_and_cost_comes_from_the_models_price(database_url):
    at = datetime(2026, 2, 3, 4, 5, 6, 123456, tzinfo=UTC).timestamp()

    async def scenario():
        store = _store(database_url)
        await store.start()
        try:
            store.usage.record(UsageRow(
                model="priced-alias", endpoint="/v1/chat/completions", status=200,
                key_id="key_a", deployment="http://upstream/v1", prompt_tokens=2_000_000,
                completion_tokens=1_000_000, cached_tokens=500, latency_ms=812.5,
                ttft_ms=95.25, streamed=True, at=at))
            store.usage.record(_row(status=502, cost=0.25, key_id="key_a"))
            await store.usage.flush()
            async with store._engine.connect() as connection:
                rows = (await connection.execute(
                    select(usage_table).order_by(usage_table.c.id))).mappings().all()
        finally:
            await store.stop()
        return rows

    first, second = run(scenario())
    assert first["at"] == datetime(2026, 2, 3, 4, 5, 6, 123456, tzinfo=UTC)
    assert (first["day"], first["key_id"], first["model"], first["deployment"]) == \
        ("2026-02-03", "key_a", "priced-alias", "http://upstream/v1")
    assert (first["status"], first["prompt_tokens"], first["completion_tokens"],
            first["cached_tokens"]) == (200, 2_000_000, 1_000_000, 500)
    assert (first["latency_ms"], first["ttft_ms"], first["streamed"]) == (812.5, 95.25, True)
    assert first["cost"] == pytest.approx(2 * 0.5 + 1 * 1.5)
    assert (second["cost"], second["status"], second["ttft_ms"], second["streamed"]) == \
        (0.25, 502, None, False)


def test_record_never_waits_and_the_background_task_writes_batches(database_url):
    async def scenario():
        store = _store(database_url)
        await store.start()
        try:
            started = time.perf_counter()
            for i in range(3000):
                store.usage.record(_row(prompt_tokens=i))
            queued_s = time.perf_counter() - started
            deadline = time.monotonic() + 30
            while await _count(store) < 3000 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)  # no flush: only the writer task writes
            return queued_s, await _count(store), store.usage.pending
        finally:
            await store.stop()

    queued_s, written, pending = run(scenario())
    assert written == 3000 and pending == 0
    # Only an order-of-magnitude bound: queuing is a list append (~µs), a write is ~ms.
    assert queued_s < 1.0


def test_close_writes_every_row_left_in_the_buffer(database_url):
    async def scenario():
        store = _store(database_url)
        await store.start()
        for _ in range(2500):
            store.usage.record(_row(completion_tokens=2))
        await store.stop()  # a clean shutdown, right after the requests
        reopened = _store(database_url)
        await reopened.start()
        try:
            return await _count(reopened), await reopened.usage.summary("model")
        finally:
            await reopened.stop()

    written, summary = run(scenario())
    assert written == 2500
    assert summary[0]["completion_tokens"] == 5000 and summary[0]["requests"] == 2500


def test_a_full_buffer_drops_new_rows_and_counts_them():
    recorder = UsageRecorder(max_buffer=3)
    for _ in range(5):
        recorder.record(_row())
    assert recorder.pending == 3 and recorder.dropped == 2


def test_summary_groups_and_filters(database_url):
    day1 = datetime(2026, 5, 1, 23, 59, tzinfo=UTC).timestamp()
    day2 = datetime(2026, 5, 2, 0, 1, tzinfo=UTC).timestamp()

    async def scenario():
        store = _store(database_url)
        await store.start()
        try:
            record = store.usage.record
            record(_row(model="priced", key_id="k1", prompt_tokens=100, completion_tokens=10,
                        latency_ms=10, at=day1))
            record(_row(model="priced", key_id="k1", prompt_tokens=100, completion_tokens=10,
                        latency_ms=30, status=500, at=day2))
            record(_row(model="free", key_id="k2", prompt_tokens=5, cached_tokens=3, at=day2))
            record(_row(model="free", prompt_tokens=1, at=day2))
            since = datetime(2026, 5, 2, tzinfo=UTC)
            return (await store.usage.summary("key"), await store.usage.summary("model"),
                    await store.usage.summary("day"),
                    await store.usage.summary("key", since=since),
                    await store.usage.summary("day", until=since))
        finally:
            await store.stop()

    by_key, by_model, by_day, key_since, day_until = run(scenario())
    assert [(r["key"], r["requests"], r["errors"], r["total_tokens"]) for r in by_key] == \
        [("k1", 2, 1, 220), ("k2", 1, 0, 5), (None, 1, 0, 1)]  # most tokens first
    k1 = by_key[0]
    assert (k1["prompt_tokens"], k1["completion_tokens"], k1["mean_latency_ms"]) == (200, 20, 20.0)
    assert k1["cost"] == pytest.approx((200 * 0.5 + 20 * 1.5) / 1e6)
    assert by_key[1]["cost"] is None and by_key[1]["cached_tokens"] == 3
    assert [(r["model"], r["requests"]) for r in by_model] == [("priced", 2), ("free", 2)]
    assert [(r["day"], r["requests"]) for r in by_day] == [("2026-05-01", 1), ("2026-05-02", 3)]
    assert [(r["key"], r["requests"]) for r in key_since][0] == ("k1", 1)
    assert [(r["day"], r["requests"]) for r in day_until] == [("2026-05-01", 1)]


def test_summary_rejects_an_unknown_grouping(tmp_path):
    async def scenario():
        store = _store(f"sqlite:///{tmp_path}/u.db")
        await store.start()
        try:
            with pytest.raises(ValueError, match="key, model, day"):
                await store.usage.summary("user")
        finally:
            await store.stop()

    run(scenario())


def run(coroutine):  # noqa: ANN001, ANN201
    return asyncio.run(coroutine)


def test_window_totals_match_the_raw_rows_for_any_since_and_until(database_url):
    """Whole days come from the daily totals and partial days from the raw rows: for
    windows that start and end at midnight, mid-day, on the same day or not at all, the
    totals are those of the rows whose time falls inside."""
    import random

    rng = random.Random(11)
    base = datetime(2026, 4, 1, tzinfo=UTC).timestamp()
    rows = [_row(model=rng.choice(["priced", "free"]), key_id=rng.choice(["k1", "k2", None]),
                 prompt_tokens=rng.randrange(100), completion_tokens=rng.randrange(50),
                 status=rng.choice([200, 200, 429]), at=base + rng.uniform(0, 5 * 86400))
            for _ in range(400)]
    day = 86400
    points = [None, base, base + day, base + 1.5 * day, base + 2.25 * day, base + 2.75 * day,
              base + 3 * day, base + 4.5 * day, base + 9 * day]
    windows = [(s, u) for s in points for u in points if s is None or u is None or s <= u]

    def expected(since, until, group_by):  # noqa: ANN001, ANN202
        totals: dict = {}
        for row in rows:
            if (since is None or row.at >= since) and (until is None or row.at < until):
                label = {"key": row.key_id, "model": row.model,
                         "day": datetime.fromtimestamp(row.at, UTC).strftime("%Y-%m-%d")
                         }[group_by]
                requests, tokens = totals.get(label, (0, 0))
                totals[label] = (requests + 1, tokens + row.prompt_tokens + row.completion_tokens)
        return totals

    def as_time(value):  # noqa: ANN001, ANN202
        return None if value is None else datetime.fromtimestamp(value, UTC)

    async def scenario():
        store = _store(database_url)
        await store.start()
        try:
            for row in rows:
                store.usage.record(row)
            answers = {}
            for since, until in windows:
                for group_by in ("key", "model", "day"):
                    summary = await store.usage.summary(group_by, as_time(since), as_time(until))
                    answers[since, until, group_by] = {
                        r[group_by]: (r["requests"], r["total_tokens"]) for r in summary}
                answers[since, until, "k1"] = await store.keys.tokens_used("k1", as_time(since))
            return answers
        finally:
            await store.stop()

    answers = run(scenario())
    for since, until in windows:
        for group_by in ("key", "model", "day"):
            assert answers[since, until, group_by] == expected(since, until, group_by), \
                (since, until, group_by)
        k1 = expected(since, None, "key").get("k1", (0, 0))[1]
        assert answers[since, until, "k1"] == k1, since


def test_rows_wait_while_the_database_refuses_writes_and_are_written_after(tmp_path):
    """Another process holds SQLite's write lock: the batch fails (after SQLite's busy
    timeout), its rows stay queued in order, and the writer's retry writes them once the
    lock is gone."""
    import sqlite3

    path = tmp_path / "locked.db"

    async def scenario():
        store = _store(f"sqlite:///{path}")
        await store.start()
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            for i in range(10):
                store.usage.record(_row(prompt_tokens=i))
            with pytest.raises(Exception, match="locked"):
                await store.usage.flush()
            kept = [row[USAGE_COLUMNS.index("prompt_tokens")] for row in store.usage._buffer]
            blocker.execute("ROLLBACK")
            deadline = time.monotonic() + 60
            while await _count(store) < 10 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)  # the background writer retries on its own
            async with store._engine.connect() as connection:
                written = (await connection.execute(
                    select(usage_table.c.prompt_tokens).order_by(usage_table.c.id))).scalars().all()
            return kept, written, store.usage.pending
        finally:
            blocker.close()
            await store.stop()

    kept, written, pending = run(scenario())
    assert kept == list(range(10))
    assert written == list(range(10)) and pending == 0


def test_a_batch_that_fails_half_way_leaves_nothing_behind_and_is_written_whole_later(
        tmp_path):
    """The rows went in but the daily totals could not be added (their table is gone for
    a moment): the whole batch rolls back, stays queued, and is written once, with its
    totals, when the table is back."""
    import sqlite3

    path = tmp_path / "half.db"

    async def scenario():
        store = _store(f"sqlite:///{path}")
        await store.start()
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("ALTER TABLE usage_daily RENAME TO usage_daily_away")
            for i in range(600):  # more than one multi-row statement before the totals
                store.usage.record(_row(prompt_tokens=1))
            with pytest.raises(Exception, match="usage_daily"):
                await store.usage.flush()
            after_failure = await _count(store), store.usage.pending
            other.execute("ALTER TABLE usage_daily_away RENAME TO usage_daily")
            await store.usage.flush()
            totals = await store.usage.summary("model")
            return after_failure, await _count(store), totals, store.usage.pending
        finally:
            other.close()
            await store.stop()

    after_failure, written, totals, pending = run(scenario())
    assert after_failure == (0, 600)
    assert written == 600 and pending == 0
    assert [(t["model"], t["requests"], t["prompt_tokens"]) for t in totals] == [
        ("free", 600, 600)]


_WRITER = """
import asyncio, sys
from modelport.config import parse_config
from modelport.store import Store, UsageRow

async def main(url, rows):
    store = Store.from_config(parse_config({"server": {"database_url": url}, "models": [
        {"name": "free", "engine": "openai", "base_url": "http://127.0.0.1:9/v1"}]}))
    await store.start()
    for i in range(rows):
        store.usage.record(UsageRow(model="free", endpoint="/v1/chat/completions",
                                    status=200, prompt_tokens=i))
        if i % 50 == 0:
            await asyncio.sleep(0)  # the writer task writes batches meanwhile
    await store.stop()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_several_gateway_processes_write_usage_to_one_sqlite_file(tmp_path):
    """server.processes > 1 on the default SQLite store: each process writes its own
    batches to the same file at once; WAL and the busy timeout let every row in."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'shared.db'}"

    async def migrated_then_counted(writers):  # noqa: ANN001, ANN202
        store = _store(url)
        await store.start()  # the primary migrates before the others start
        try:
            await asyncio.to_thread(writers)
            return await _count(store)
        finally:
            await store.stop()

    def writers() -> None:
        processes = [subprocess.Popen([sys.executable, "-c", _WRITER, url, "3000"],
                                      stderr=subprocess.PIPE) for _ in range(3)]
        for process in processes:
            _, errors = process.communicate(timeout=120)
            assert process.returncode == 0, errors.decode()
            assert b"Traceback" not in errors and b"locked" not in errors, errors.decode()

    assert run(migrated_then_counted(writers)) == 9000
