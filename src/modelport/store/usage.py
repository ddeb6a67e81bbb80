"""Usage accounting: one row per request, written in batches off the request path.

`record` only appends to a bounded in-memory buffer; a background task writes the
buffer every `interval_s` or as soon as `batch_rows` are waiting, and `close` writes
what is left, so a clean shutdown loses nothing. If the database is away, rows wait in
the buffer (up to `max_buffer`; beyond it new rows are dropped and counted). With a
journal (store.journal) every row is also on local disk within its flush window, so a
process killed with -9 loses only that window: the next start writes the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.config import Price
from modelport.store.journal import UsageJournal
from modelport.store.schema import USAGE_COLUMNS
from modelport.store.schema import usage as usage_table
from modelport.store.sqlite_usage import SqliteUsageWriter, insert_statements, sqlite_file
from modelport.store.summary import aggregate, daily_increments, upsert_daily

logger = logging.getLogger("modelport.store")

GROUPINGS: tuple[str, ...] = ("key", "model", "day")


@dataclass(slots=True)
class UsageRow:
    """One request as accounting sees it; `at` is when it arrived (epoch seconds)."""

    model: str
    endpoint: str
    status: int
    key_id: str | None = None
    deployment: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    streamed: bool = False
    cost: float | None = None  # filled from the model's `price` when left None
    at: float = field(default_factory=time.time)


_COLUMNS = USAGE_COLUMNS
_AT, _KEY, _MODEL, _ENDPOINT, _STATUS, _PROMPT, _COMPLETION, _LATENCY, _COST = (
    USAGE_COLUMNS.index(name) for name in (
        "at", "key_id", "model", "endpoint", "status", "prompt_tokens", "completion_tokens",
        "latency_ms", "cost"))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAYS: dict[int, str] = {}


def _micros(at: datetime) -> int:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (at - _EPOCH) // timedelta(microseconds=1)


def _day(timestamp: float) -> str:
    """The UTC day of `timestamp` as YYYY-MM-DD (strftime per row cost 2 µs)."""
    index = int(timestamp // 86400)
    day = _DAYS.get(index)
    if day is None:
        if len(_DAYS) > 64:
            _DAYS.clear()
        day = _DAYS[index] = datetime.fromtimestamp(index * 86400, UTC).strftime("%Y-%m-%d")
    return day


# A SQLite file gets its batches through SqliteUsageWriter (store/sqlite_usage.py): one
# hand-over to a thread of its own per batch, multi-row statements there.


# PostgreSQL gets a batch as ONE parameter, a JSON array of rows, unpacked by the server
# (its work, not the gateway's).
_POSTGRES_TYPES = {"status": "smallint", "prompt_tokens": "integer",
                   "completion_tokens": "integer", "cached_tokens": "integer",
                   "latency_ms": "float8", "ttft_ms": "float8", "streamed": "boolean",
                   "cost": "float8"}


def _postgres_insert() -> str:
    values = [f"timestamptz 'epoch' + (row ->> {_AT})::bigint * interval '1 microsecond'"]
    for index, name in enumerate(_COLUMNS[1:], start=1):
        cast = _POSTGRES_TYPES.get(name)
        values.append(f"(row ->> {index})::{cast}" if cast else f"row ->> {index}")
    return (f"INSERT INTO usage ({', '.join(_COLUMNS)}) SELECT {', '.join(values)} "
            "FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS batch(row, n) ORDER BY n")




class UsageRecorder:
    def __init__(self, prices: Mapping[str, Price] | None = None, *, max_buffer: int = 100_000,
                 batch_rows: int = 1000, interval_s: float = 1.0,
                 journal: UsageJournal | None = None) -> None:
        self._prices = dict(prices or {})
        self._journal = journal
        self._max_buffer = max_buffer
        self._batch_rows = batch_rows
        self._interval_s = interval_s
        # Rows wait as tuples of plain values: the garbage collector stops tracking those,
        # so a second's worth of waiting rows adds nothing to its collections.
        self._buffer: list[tuple] = []
        self._writing: list[tuple] = []  # taken from the buffer, not yet committed
        self._wake = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._engine: AsyncEngine | None = None
        self._sqlite: SqliteUsageWriter | None = None
        self._writer: asyncio.Task[None] | None = None
        self._stopping = False
        self.dropped = 0

    async def start(self, engine: AsyncEngine) -> None:
        self._engine = engine
        if engine.dialect.name == "sqlite":
            path = sqlite_file(engine.url.database)
            self._sqlite = SqliteUsageWriter(path) if path is not None else None
        self._wake = asyncio.Event()  # bound to the loop the app runs on
        self._stopping = False
        if self._journal is not None:
            for row in await self._not_stored(self._journal.open()):
                self._buffer.append(row)
                self._journal.append(row)
        self._writer = asyncio.create_task(self._write_forever(), name="usage-writer")

    async def _not_stored(self, rows: list[tuple]) -> list[tuple]:
        """The rows of a journal the database does not hold yet (a gateway may have died
        between committing a batch and marking it so), each once."""
        if not rows:
            return rows
        assert self._engine is not None
        low = min(row[_AT] for row in rows) - 1
        high = max(row[_AT] for row in rows) + 1
        table = usage_table
        async with self._engine.connect() as connection:
            found = await connection.execute(
                select(table.c.at, table.c.model, table.c.endpoint, table.c.status,
                       table.c.latency_ms).where(
                    table.c.at >= datetime.fromtimestamp(low, UTC),
                    table.c.at <= datetime.fromtimestamp(high, UTC)))
            seen = {(_micros(at), model, endpoint, status, latency)
                    for at, model, endpoint, status, latency in found}
        fresh = []
        for row in rows:
            identity = (round(row[_AT] * 1_000_000), row[_MODEL], row[_ENDPOINT],
                        row[_STATUS], row[_LATENCY])
            if identity not in seen:
                seen.add(identity)
                fresh.append(row)
        return fresh

    def record(self, row: UsageRow) -> None:
        """Queue one row; never waits."""
        self.record_request(row.model, row.deployment, row.endpoint, row.status, row.key_id,
                            row.prompt_tokens, row.completion_tokens, row.cached_tokens,
                            row.latency_ms, row.ttft_ms, row.streamed, row.at, row.cost)

    def record_request(self, model: str, deployment: str | None, endpoint: str, status: int,
                       key_id: str | None, prompt_tokens: int, completion_tokens: int,
                       cached_tokens: int, latency_ms: float, ttft_ms: float | None,
                       streamed: bool, at: float, cost: float | None = None) -> None:
        """`record` without building a UsageRow first (the per-request path). The row
        waits as it came, in USAGE_COLUMNS order with `at` in epoch seconds and no day;
        its stored form (and its cost from the model's price) is made when its batch is
        written, many rows in one go off the request path."""
        if len(self._buffer) >= self._max_buffer:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                logger.error("usage buffer full (%d rows): the database does not keep up or "
                             "is away; %d row(s) dropped so far", self._max_buffer, self.dropped)
            return
        row = (at, None, key_id, model, deployment, endpoint, status, prompt_tokens,
               completion_tokens, cached_tokens, latency_ms, ttft_ms, streamed, cost)
        self._buffer.append(row)
        if self._journal is not None:
            self._journal.append(row)
        if len(self._buffer) >= self._batch_rows:
            self._wake.set()

    def pending_tokens(self, key_id: str, since: datetime | None = None) -> int:
        """Tokens of the key's rows that are not in the database yet."""
        after = since.timestamp() if since is not None else float("-inf")
        return sum(row[_PROMPT] + row[_COMPLETION]
                   for rows in (self._writing, self._buffer) for row in rows
                   if row[_KEY] == key_id and row[_AT] >= after)

    @property
    def pending(self) -> int:
        return len(self._buffer) + len(self._writing)

    async def flush(self) -> None:
        """Write every row recorded so far."""
        while self._buffer and self._engine is not None:
            await self._write_pending()

    async def _write_pending(self) -> None:
        """Write the rows waiting now, in one transaction. Rows recorded meanwhile wait
        for the next turn: under steady load, writing until the buffer is empty would
        commit a few rows at a time, back to back."""
        async with self._write_lock:
            if not self._buffer:
                return
            self._writing, self._buffer = self._buffer, []
            # Every row the journal has so far is in this batch (or an earlier one).
            journaled = self._journal.rows if self._journal is not None else 0
            try:
                await self._insert(self._writing)
            except BaseException:
                self._buffer[:0] = self._writing  # kept for the next try, in order
                raise
            finally:
                self._writing = []
            if self._journal is not None:
                self._journal.committed(journaled)

    async def close(self) -> None:
        # The writer finishes the batch it is writing (cancelling it mid-commit could
        # leave rows both written and queued again), then the rest is written here.
        self._stopping = True
        self._wake.set()
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        try:
            await self.flush()
        except Exception as error:
            logger.error("%d usage row(s) could not be written at shutdown: %s: %s",
                         self.pending, type(error).__name__, error)
        if self._sqlite is not None:
            await self._sqlite.close()
            self._sqlite = None
        if self._journal is not None:
            self._journal.close()

    async def _write_forever(self) -> None:
        failures = 0
        while not self._stopping:
            await self._sleep(self._interval_s)
            try:
                await self._write_pending()
                failures = 0
            except Exception as error:
                failures += 1
                logger.warning("could not write %d usage row(s), will retry: %s: %s",
                               self.pending, type(error).__name__, error)
                await self._sleep(min(30.0, self._interval_s * 2 ** failures))

    async def _sleep(self, seconds: float) -> None:
        """Up to `seconds`, less when a full batch is waiting or the recorder closes."""
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass
        self._wake.clear()

    async def _insert(self, rows: list[tuple]) -> None:
        if self._sqlite is not None:
            await self._sqlite.write(rows, self._stored)
            return
        rows = [self._stored(row) for row in rows]
        assert self._engine is not None
        dialect = self._engine.dialect.name
        upsert = upsert_daily(dialect)
        async with self._engine.begin() as connection:
            for start in range(0, len(rows), self._batch_rows):
                batch = rows[start:start + self._batch_rows]
                if dialect == "postgresql":
                    await connection.exec_driver_sql(_postgres_insert(),
                                                     (orjson.dumps(batch).decode(),))
                else:  # an in-memory SQLite: only the engine's connection sees it
                    for statement, parameters in insert_statements(batch):
                        await connection.exec_driver_sql(statement, parameters)
                await connection.execute(upsert, daily_increments(batch))

    def _stored(self, row: tuple) -> tuple:
        """A waiting row as it is stored: `at` in integer microseconds, its UTC day, and
        its cost from the model's price when it came without one."""
        at, cost = row[_AT], row[_COST]
        if cost is None:
            price = self._prices.get(row[_MODEL])
            if price is not None:
                cost = price.cost(row[_PROMPT], row[_COMPLETION])
        return (round(at * 1_000_000), _day(at), *row[_KEY:_COST], cost)

    async def summary(self, group_by: str = "key", since: datetime | None = None,
                      until: datetime | None = None) -> list[dict[str, Any]]:
        """Requests, errors, tokens, cost and mean latency per key, model or UTC day,
        over [since, until), rows recorded so far included; days in order, keys and
        models by most tokens first."""
        if group_by not in GROUPINGS:
            raise ValueError(f"group_by must be one of {', '.join(GROUPINGS)}")
        # Shielded: an admin request given up half-way must not cut a batch off mid-commit.
        await asyncio.shield(self.flush())
        assert self._engine is not None, "the usage recorder is not started"
        async with self._engine.connect() as connection:
            groups = await aggregate(connection, group_by, since, until)
        ordered = sorted(groups.items(), key=(lambda item: item[0]) if group_by == "day"
                         else (lambda item: (-item[1].total_tokens, str(item[0]))))
        return [{group_by: label, **totals.as_json()} for label, totals in ordered]
