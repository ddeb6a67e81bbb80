"""Virtual keys: created, changed and revoked in the database, checked from memory.

A key's secret (`sk-mp-…`) is shown once, when it is made; the database keeps its
sha256 and a short prefix for listings. `authenticate` answers from an in-memory map of
hashes, so the request path never waits on the database: changes made through this
process are in the map at once, those made by other gateways sharing the database
within `REFRESH_S`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.store.schema import keys as keys_table
from modelport.store.summary import aggregate

if TYPE_CHECKING:
    from modelport.store.usage import UsageRecorder

logger = logging.getLogger("modelport.store")

SECRET_PREFIX = "sk-mp-"
BUDGET_PERIODS: tuple[str, ...] = ("day", "month", "total")
# Fields a PATCH may change; the secret, the id and the revocation are not among them.
UPDATABLE = ("name", "models", "rpm", "tpm", "max_parallel", "budget_tokens",
             "budget_period", "expires_at", "metadata")
REFRESH_S = 5.0
_KNOWN_MAX = 10_000  # remembered secret hashes (cleared when full)


@dataclass(frozen=True)
class VirtualKey:
    id: str
    name: str
    models: tuple[str, ...] | None  # None: every model
    rpm: int | None
    tpm: int | None
    max_parallel: int | None
    budget_tokens: int | None
    budget_period: str
    expires_at: datetime | None
    revoked: bool
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False)
    prefix: str = ""
    created_at: datetime | None = None

    def expired(self, now: float | None = None) -> bool:
        return (self.expires_at is not None
                and self.expires_at.timestamp() <= (time.time() if now is None else now))

    def refusal(self, now: float | None = None) -> str | None:
        """Why this key may not be used now (revoked, expired), or None when it may."""
        if self.revoked:
            return f"the API key '{self.name}' ({self.prefix}…) has been revoked"
        if self.expired(now):
            assert self.expires_at is not None
            return (f"the API key '{self.name}' ({self.prefix}…) expired at "
                    f"{self.expires_at.isoformat()}")
        return None

    def allows(self, model: str) -> bool:
        """`model` is a configured model's own name (aliases resolved by the caller)."""
        return self.models is None or model in self.models


@dataclass(frozen=True)
class CreatedKey:
    key: VirtualKey
    secret: str  # shown to the creator once; not kept anywhere


def hash_secret(secret: str) -> str:
    # The secret carries 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def period_start(period: str, now: datetime | None = None) -> datetime | None:
    """Start of the budget period that `now` is in (UTC); None for `total`."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return None


def _key_from_row(row: RowMapping) -> VirtualKey:
    models = row["models"]
    return VirtualKey(
        id=row["id"], name=row["name"],
        models=tuple(models) if models is not None else None,
        rpm=row["rpm"], tpm=row["tpm"], max_parallel=row["max_parallel"],
        budget_tokens=row["budget_tokens"], budget_period=row["budget_period"],
        expires_at=row["expires_at"], revoked=bool(row["revoked"]),
        metadata=dict(row["meta"] or {}), prefix=row["prefix"], created_at=row["created_at"],
    )


class KeyStore:
    def __init__(self, usage: UsageRecorder | None = None) -> None:
        self._engine: AsyncEngine | None = None
        self._usage = usage
        self._by_hash: dict[str, VirtualKey] = {}
        # The hash of each secret that matched a key, so a key's later requests skip the
        # hashing (a secret's hash never changes; the key it names is still looked up, so
        # a revoked or changed key is seen at once). Only secrets of real keys get in.
        self._known: dict[str, str] = {}
        # Keys written here while a reload's SELECT is under way: they win over its rows.
        self._written_during_reload: dict[str, tuple[str, VirtualKey]] | None = None
        self._refresher: asyncio.Task[None] | None = None
        # Called after every change written here (the other gateway processes of this
        # machine are then told at once instead of within REFRESH_S).
        self.listeners: list[Callable[[], None]] = []

    async def start(self, engine: AsyncEngine) -> None:
        self._engine = engine
        await self.reload()
        self._refresher = asyncio.create_task(self._refresh_forever(), name="key-refresh")

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
            self._refresher = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the key store is not started")
        return self._engine

    # --- the request path -------------------------------------------------------------

    def authenticate(self, secret: str) -> VirtualKey | None:
        """The key whose secret this is, revoked or expired ones included (their
        `refusal()` says why they may not be used); None for anything else."""
        secret_hash = self._known.get(secret)
        if secret_hash is None:
            if not secret.startswith(SECRET_PREFIX):
                return None
            secret_hash = hash_secret(secret)
            if secret_hash not in self._by_hash:
                return None
            if len(self._known) >= _KNOWN_MAX:
                self._known.clear()
            self._known[secret] = secret_hash
        return self._by_hash.get(secret_hash)

    async def tokens_used(self, key_id: str, since: datetime | None = None) -> int:
        """Prompt plus completion tokens of the key's requests since `since` (ever, when
        None), counting rows still waiting to be written."""
        async with self.engine.connect() as connection:
            totals = (await aggregate(connection, None, since, key_id=key_id)).get(None)
        stored = totals.total_tokens if totals else 0
        pending = self._usage.pending_tokens(key_id, since) if self._usage else 0
        return stored + pending

    # --- administration ---------------------------------------------------------------

    async def create(
        self, name: str, *, models: list[str] | None = None, rpm: int | None = None,
        tpm: int | None = None, max_parallel: int | None = None,
        budget_tokens: int | None = None, budget_period: str = "total",
        expires_at: datetime | None = None, metadata: Mapping[str, Any] | None = None,
    ) -> CreatedKey:
        if budget_period not in BUDGET_PERIODS:
            raise ValueError(f"budget_period must be one of {', '.join(BUDGET_PERIODS)}")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        values = {
            "id": "key_" + secrets.token_hex(8), "name": name,
            "secret_hash": hash_secret(secret), "prefix": secret[:len(SECRET_PREFIX) + 4],
            "models": list(models) if models is not None else None, "rpm": rpm, "tpm": tpm,
            "max_parallel": max_parallel, "budget_tokens": budget_tokens,
            "budget_period": budget_period, "expires_at": expires_at, "revoked": False,
            "meta": dict(metadata or {}), "created_at": now, "updated_at": now,
        }
        async with self.engine.begin() as connection:
            await connection.execute(insert(keys_table).values(**values))
        key = _key_from_row(values)  # type: ignore[arg-type]
        self._remember(values["secret_hash"], key)
        self._changed()
        return CreatedKey(key, secret)

    async def get(self, key_id: str) -> VirtualKey | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(
                select(keys_table).where(keys_table.c.id == key_id))).mappings().first()
        return None if row is None else self._remember(row["secret_hash"], _key_from_row(row))

    async def list(self) -> list[VirtualKey]:
        async with self.engine.connect() as connection:
            rows = (await connection.execute(
                select(keys_table).order_by(keys_table.c.created_at, keys_table.c.id)
            )).mappings().all()
        return [self._remember(row["secret_hash"], _key_from_row(row)) for row in rows]

    async def update(self, key_id: str, changes: Mapping[str, Any]) -> VirtualKey | None:
        """Change only the fields given (PATCH); a field given as None loses its value
        (its limit is lifted)."""
        unknown = set(changes) - set(UPDATABLE)
        if unknown:
            raise ValueError(f"fields that cannot be changed: {', '.join(sorted(unknown))}")
        values = {("meta" if name == "metadata" else name): value
                  for name, value in changes.items()}
        if "budget_period" in values and values["budget_period"] not in BUDGET_PERIODS:
            raise ValueError(f"budget_period must be one of {', '.join(BUDGET_PERIODS)}")
        if values.get("meta", {}) is None:
            values["meta"] = {}
        return await self._write(key_id, values)

    async def revoke(self, key_id: str) -> VirtualKey | None:
        """Takes effect at once in this process; in other gateways within REFRESH_S."""
        return await self._write(key_id, {"revoked": True})

    async def _write(self, key_id: str, values: dict[str, Any]) -> VirtualKey | None:
        values["updated_at"] = datetime.now(UTC)
        async with self.engine.begin() as connection:
            found = await connection.execute(
                update(keys_table).where(keys_table.c.id == key_id).values(**values))
            if found.rowcount == 0:
                return None
            row = (await connection.execute(
                select(keys_table).where(keys_table.c.id == key_id))).mappings().one()
        key = self._remember(row["secret_hash"], _key_from_row(row))
        self._changed()
        return key

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    # --- the cache --------------------------------------------------------------------

    def _remember(self, secret_hash: str, key: VirtualKey) -> VirtualKey:
        self._by_hash[secret_hash] = key
        if self._written_during_reload is not None:
            self._written_during_reload[key.id] = (secret_hash, key)
        return key

    async def reload(self) -> None:
        """Replace the in-memory map with the database's keys (other gateways' changes)."""
        self._written_during_reload = {}
        try:
            async with self.engine.connect() as connection:
                rows = (await connection.execute(select(keys_table))).mappings().all()
            fresh = {row["secret_hash"]: _key_from_row(row) for row in rows}
            for secret_hash, key in self._written_during_reload.values():
                fresh[secret_hash] = key
        finally:
            self._written_during_reload = None
        self._by_hash = fresh

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.reload()
            except Exception as error:  # the database may be away for a while; keep serving
                logger.warning("could not reload virtual keys from the database: %s: %s",
                               type(error).__name__, error)
