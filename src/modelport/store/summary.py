"""Reading usage back: totals over a time window, by key, model or UTC day.

Whole days come from `usage_daily` (a few rows per day, key and model); only a partial
first or last day of the window is read from the raw rows, through the index on `at`.
So a summary costs about the same at a hundred thousand rows as at ten million.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from modelport.store.schema import USAGE_COLUMNS, usage, usage_daily

NO_KEY = ""  # usage_daily's key_id for requests made without a virtual key


@dataclass
class Totals:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost: float | None = None  # None while no request of the group had a price
    latency_ms_sum: float = 0.0

    def add(self, values: Mapping[str, Any]) -> None:
        for name in ("requests", "errors", "prompt_tokens", "completion_tokens",
                     "cached_tokens"):
            setattr(self, name, getattr(self, name) + int(values[name] or 0))
        self.latency_ms_sum += float(values["latency_ms_sum"] or 0.0)
        if values["cost"] is not None:
            self.cost = (self.cost or 0.0) + float(values["cost"])

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "errors": self.errors,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens, "total_tokens": self.total_tokens,
            "cost": self.cost,
            "mean_latency_ms": round(self.latency_ms_sum / self.requests, 1)
            if self.requests else 0.0,
        }


_TOTAL_FIELDS = [f.name for f in fields(Totals)]


# --- writing ----------------------------------------------------------------------------

_AT = {name: index for index, name in enumerate(USAGE_COLUMNS)}


def daily_increments(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """A batch of raw rows (values in USAGE_COLUMNS order) as additions to the daily
    totals, in primary-key order (so gateways writing at the same time lock the same rows
    in the same order)."""
    groups: dict[tuple[str, str, str], Totals] = {}
    day, key, model, status = _AT["day"], _AT["key_id"], _AT["model"], _AT["status"]
    prompt, completion = _AT["prompt_tokens"], _AT["completion_tokens"]
    cached, latency, cost = _AT["cached_tokens"], _AT["latency_ms"], _AT["cost"]
    for row in rows:
        group = (row[day], row[key] or NO_KEY, row[model])
        totals = groups.get(group)
        if totals is None:
            totals = groups[group] = Totals()
        totals.requests += 1
        totals.errors += row[status] >= 400
        totals.prompt_tokens += row[prompt]
        totals.completion_tokens += row[completion]
        totals.cached_tokens += row[cached]
        totals.latency_ms_sum += row[latency]
        if row[cost] is not None:
            totals.cost = (totals.cost or 0.0) + row[cost]
    return [{"day": day, "key_id": key_id, "model": model,
             **{name: getattr(totals, name) for name in _TOTAL_FIELDS}}
            for (day, key_id, model), totals in sorted(groups.items())]


def upsert_daily(dialect: str) -> Insert:
    """INSERT … ON CONFLICT that adds to an existing day's totals (SQLite and PostgreSQL)."""
    statement = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(usage_daily)
    current, new = usage_daily.c, statement.excluded
    additions: dict[str, Any] = {
        name: current[name] + new[name]
        for name in _TOTAL_FIELDS if name != "cost"
    }
    additions["cost"] = func.coalesce(current.cost + new.cost, current.cost, new.cost)
    return statement.on_conflict_do_update(
        index_elements=[current.day, current.key_id, current.model], set_=additions)


# --- reading ----------------------------------------------------------------------------

def _midnight(when: datetime) -> datetime:
    return when.replace(hour=0, minute=0, second=0, microsecond=0)


def split_window(since: datetime | None, until: datetime | None) -> tuple[
        tuple[datetime | None, datetime | None] | None,
        list[tuple[datetime | None, datetime | None]]]:
    """[since, until) as (whole days to read from the daily totals, or None; time ranges
    to read from the raw rows)."""
    first = since if since is None or since == _midnight(since) \
        else _midnight(since) + timedelta(days=1)
    end = until if until is None or until == _midnight(until) else _midnight(until)
    if first is not None and end is not None and first >= end:
        return None, [(since, until)]
    raw = []
    if since is not None and first != since:
        raw.append((since, first))
    if until is not None and end != until:
        raw.append((end, until))
    return (first, end), raw


def _raw_query(group: ColumnElement | None, start: datetime | None, end: datetime | None,
               key_id: str | None) -> Select:
    c = usage.c
    query = select(
        *([group.label("group")] if group is not None else []),
        func.count().label("requests"),
        func.sum(case((c.status >= 400, 1), else_=0)).label("errors"),
        func.sum(c.prompt_tokens).label("prompt_tokens"),
        func.sum(c.completion_tokens).label("completion_tokens"),
        func.sum(c.cached_tokens).label("cached_tokens"),
        func.sum(c.cost).label("cost"),
        func.sum(c.latency_ms).label("latency_ms_sum"),
    )
    if start is not None:
        query = query.where(c.at >= start)
    if end is not None:
        query = query.where(c.at < end)
    if key_id is not None:
        query = query.where(c.key_id == key_id)
    return query.group_by(group) if group is not None else query


def _daily_query(group: ColumnElement | None, first: datetime | None, end: datetime | None,
                 key_id: str | None) -> Select:
    c = usage_daily.c
    query = select(*([group.label("group")] if group is not None else []),
                   *(func.sum(c[name]).label(name) for name in _TOTAL_FIELDS))
    if first is not None:
        query = query.where(c.day >= first.strftime("%Y-%m-%d"))
    if end is not None:
        query = query.where(c.day < end.strftime("%Y-%m-%d"))
    if key_id is not None:
        query = query.where(c.key_id == key_id)
    return query.group_by(group) if group is not None else query


async def aggregate(connection: AsyncConnection, group_by: str | None,
                    since: datetime | None = None, until: datetime | None = None,
                    key_id: str | None = None) -> dict[Any, Totals]:
    """Totals per group (`key`, `model`, `day`; one group, None, when `group_by` is None)
    over [since, until), of one key's requests only when `key_id` is given."""
    days, ranges = split_window(since, until)
    results: dict[Any, Totals] = {}
    queries = []
    if days is not None:
        group = usage_daily.c[{"key": "key_id"}.get(group_by, group_by)] if group_by else None
        queries.append(_daily_query(group, *days, key_id))
    for start, end in ranges:
        group = usage.c[{"key": "key_id"}.get(group_by, group_by)] if group_by else None
        queries.append(_raw_query(group, start, end, key_id))
    for query in queries:
        for row in (await connection.execute(query)).mappings():
            if not row["requests"]:
                continue  # an ungrouped query over no rows still answers one row of NULLs
            label = row["group"] if group_by else None
            if group_by == "key" and label == NO_KEY:
                label = None
            results.setdefault(label, Totals()).add(row)
    return results
