"""The tables of keys and usage, as the queries see them (the migrations create them)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out on every database (SQLite keeps no time zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

keys = Table(
    "keys", metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    # sha256 of the secret: the secret itself is shown once and never stored.
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("models", JSON, nullable=True),  # None: every model
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("max_parallel", Integer),
    Column("budget_tokens", BigInteger),
    Column("budget_period", String(8), nullable=False),
    Column("expires_at", UTCDateTime),
    Column("revoked", Boolean, nullable=False),
    Column("metadata", JSON, nullable=False, key="meta"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# No foreign key to keys: a usage row must never be refused, whatever happened to its key.
usage = Table(
    "usage", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    # The UTC date as text, so that grouping by day needs no date function (they differ
    # between databases) and can use an index.
    Column("day", String(10), nullable=False),
    Column("key_id", String(32)),
    Column("model", String(200), nullable=False),
    Column("deployment", String(500)),
    Column("endpoint", String(64), nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("cached_tokens", Integer, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("ttft_ms", Float),
    Column("streamed", Boolean, nullable=False),
    Column("cost", Float),
    Index("ix_usage_at", "at"),
    Index("ix_usage_key_at", "key_id", "at"),
)

# Totals per UTC day, key and model, kept in step with `usage` (same transaction): the
# summaries and budgets read whole days from here, and only the raw rows of a partial
# first or last day, instead of aggregating every row ever written.
usage_daily = Table(
    "usage_daily", metadata,
    Column("day", String(10), primary_key=True),
    Column("key_id", String(32), primary_key=True),  # '' for requests without a virtual key
    Column("model", String(200), primary_key=True),
    Column("requests", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("cost", Float),
    Column("latency_ms_sum", Float, nullable=False),
    Index("ix_usage_daily_key_day", "key_id", "day"),  # one key's budget
)


# The usage table's columns as the writer hands them to the driver (all but the id).
USAGE_COLUMNS = ("at", "day", "key_id", "model", "deployment", "endpoint", "status",
                 "prompt_tokens", "completion_tokens", "cached_tokens", "latency_ms", "ttft_ms",
                 "streamed", "cost")
