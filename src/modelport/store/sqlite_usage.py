"""Usage batches into a SQLite file through the standard library's driver, on a thread of
their own.

Through the async engine every statement of a batch (BEGIN, each multi-row INSERT, the
daily totals, COMMIT) was a round-trip between the event loop and aiosqlite's thread:
a future, a wake-up of the loop and a hand-over of the GIL each time. Here the whole batch
goes over once and comes back as one future, and the SQL runs where the loop never waits
on it. Reads (summaries, budgets) and key writes keep using the engine; WAL and a busy
timeout let the two connections share the file.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from typing import Any

from sqlalchemy.dialects import sqlite

from modelport.store.schema import USAGE_COLUMNS, usage_daily
from modelport.store.summary import daily_increments, upsert_daily

# One statement inserts this many rows, one parameter per value: one call binds them all
# and one step inserts them (row by row, the driver takes the GIL back twice a row).
SQLITE_ROWS = 250  # 3,500 parameters a statement, well under SQLite's 32,766


@functools.lru_cache(maxsize=16)
def insert_rows_sql(rows: int) -> str:
    """INSERT of `rows` usage rows; `at` arrives as integer microseconds since the epoch
    and is stored as the text timestamp the rest of the schema reads."""
    at = "column1"
    values = [f"strftime('%Y-%m-%d %H:%M:%S', {at} / 1000000, 'unixepoch') "
              f"|| printf('.%06d', {at} % 1000000)"]
    values += [f"column{index + 1}" for index in range(1, len(USAGE_COLUMNS))]
    placeholders = "(" + ", ".join("?" * len(USAGE_COLUMNS)) + ")"
    return (f"INSERT INTO usage ({', '.join(USAGE_COLUMNS)}) SELECT {', '.join(values)} "
            f"FROM (VALUES {', '.join([placeholders] * rows)})")


def insert_statements(rows: Sequence[tuple]) -> Iterator[tuple[str, tuple]]:
    """The multi-row INSERTs (statement, parameters) that store `rows` (column values in
    USAGE_COLUMNS order), SQLITE_ROWS at a time."""
    for first in range(0, len(rows), SQLITE_ROWS):
        part = rows[first:first + SQLITE_ROWS]
        yield insert_rows_sql(len(part)), tuple(chain.from_iterable(part))


@functools.cache
def _upsert_daily_sql() -> str:
    """The daily totals' INSERT … ON CONFLICT, as SQLite text with :named parameters (the
    same statement the engine runs on PostgreSQL, compiled once)."""
    dialect = sqlite.dialect(paramstyle="named")
    return str(upsert_daily("sqlite").compile(
        dialect=dialect, column_keys=[column.name for column in usage_daily.columns]))


class SqliteUsageWriter:
    """Writes batches of usage rows to one SQLite file (each row turned into its column
    values, in USAGE_COLUMNS order, by the `stored` function the batch comes with)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-sqlite")
        self._connection: sqlite3.Connection | None = None  # used on that thread only

    async def write(self, rows: Sequence[tuple], stored: Callable[[tuple], tuple]) -> None:
        """Insert the rows (`stored(row)` gives each one's column values) and add them to
        the daily totals, in one transaction."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._write, rows,
                                                         stored)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._disconnect)
        self._thread.shutdown(wait=False)

    # -- on the writer thread --------------------------------------------------------------

    def _write(self, rows: Sequence[tuple], stored: Callable[[tuple], tuple]) -> None:
        rows = [stored(row) for row in rows]
        connection = self._connection or self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for statement, parameters in insert_statements(rows):
                    connection.execute(statement, parameters)
                connection.executemany(_upsert_daily_sql(), daily_increments(rows))
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except sqlite3.Error:
            self._disconnect()  # a fresh connection next time (the file may have moved on)
            raise

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: the transactions above are the only ones, begun explicitly.
        connection = sqlite3.connect(self._path, isolation_level=None,
                                     check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000"):
            connection.execute(f"PRAGMA {pragma}")
        self._connection = connection
        return connection

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except sqlite3.Error:
                pass


def sqlite_file(database: Any) -> str | None:
    """The file a SQLite URL's database names; None for an in-memory database (which only
    the engine's own connection can see)."""
    if not database or database == ":memory:" or str(database).startswith("file::memory:"):
        return None
    return str(database)
