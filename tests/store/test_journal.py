"""The usage journal: rows on disk within its flush window, replayed by the next start
when their gateway died (kill -9) before its batch reached the database, never twice."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import func, select

from modelport.config import parse_config
from modelport.store import Store
from modelport.store import journal as journal_module
from modelport.store.journal import UsageJournal
from modelport.store.schema import usage as usage_table


def _row(n: int) -> tuple:
    return (1_796_000_000.0 + n, None, "key_a", "free", None, "/v1/chat/completions", 200,
            n, 1, 0, 10.5 + n, None, False, None)


def _die(journal: UsageJournal) -> None:
    """What kill -9 leaves: the file as written so far, its lock gone with the process."""
    journal._stop.set()
    journal._thread.join()
    journal._file.close()


def test_rows_after_the_last_commit_mark_are_replayed(tmp_path):
    journal = UsageJournal(tmp_path, "usage")
    assert journal.open() == []
    for n in range(5):
        journal.append(_row(n))
    journal.committed(3)
    journal.append(_row(5))
    time.sleep(journal_module.FLUSH_S * 3)  # on disk within the window
    _die(journal)
    with open(journal.path, "r+b") as torn:  # the line being written at the kill
        torn.seek(journal._offset)
        torn.write(b'[1796000099.0, null, "key_a"')
    again = UsageJournal(tmp_path, "usage")
    assert again.open() == [_row(3), _row(4), _row(5)]
    assert not journal.path.exists()
    again.close()
    assert list(tmp_path.iterdir()) == []  # nothing left to replay: the journal is gone


def test_a_live_journal_is_not_taken(tmp_path):
    live = UsageJournal(tmp_path, "usage")
    live.open()
    live.append(_row(1))
    time.sleep(journal_module.FLUSH_S * 3)
    other = UsageJournal(tmp_path, "usage")
    assert other.open() == []
    other.close()
    _die(live)


def test_a_rewritten_journal_keeps_only_uncommitted_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "ROTATE_BYTES", 2_000)
    journal = UsageJournal(tmp_path, "usage")
    journal.open()
    for n in range(60):
        journal.append(_row(n))
        if n % 10 == 9:
            journal.committed(n - 2)  # the last three of every ten wait for the next batch
            time.sleep(journal_module.FLUSH_S * 2)
    time.sleep(journal_module.FLUSH_S * 3)
    # Rewritten: it starts with the mark of what was committed then, not with row one.
    first = journal.path.read_bytes().split(b"\n", 1)[0]
    assert first.startswith(b'{"committed":') and first != b'{"committed":0}'
    assert len(journal.path.read_bytes().rstrip(b"\0")) < 2_000 + 20 * 120
    _die(journal)
    again = UsageJournal(tmp_path, "usage")
    assert again.open() == [_row(57), _row(58), _row(59)]
    again.close()


def test_a_restart_writes_the_journals_rows_the_database_lacks_once(tmp_path):
    config = parse_config({"server": {"data_dir": str(tmp_path)}, "models": [
        {"name": "free", "engine": "openai", "base_url": "http://127.0.0.1:9/v1"}]})

    async def count(store: Store) -> int:
        async with store._engine.connect() as connection:
            return (await connection.execute(select(func.count()).select_from(usage_table))
                    ).scalar_one()

    async def scenario():
        store = Store.from_config(config)
        await store.start()
        for n in range(3):
            store.usage.record_request(*_request(n))
        await store.usage.flush()  # in the database ...
        store.usage._journal._committed = 0  # ... but killed before its mark
        store.usage._journal._pending.clear()
        for n in range(3, 5):
            store.usage.record_request(*_request(n))  # never reached the database
        await asyncio.sleep(journal_module.FLUSH_S * 3)
        _die(store.usage._journal)
        store.usage._journal = None
        await store.usage.close()
        await store._engine.dispose()

        restarted = Store.from_config(config)
        await restarted.start()
        await restarted.usage.flush()
        total = await count(restarted)
        await restarted.stop()
        return total

    assert asyncio.run(scenario()) == 5


def _request(n: int) -> tuple:
    return ("free", None, "/v1/chat/completions", 200, "key_a", n, 1, 0, 10.5 + n, None,
            False, 1_796_000_000.0 + n)
