"""KeyStore on SQLite and on a real PostgreSQL: secrets hashed at rest, the in-memory
lookup, PATCH semantics, revocation, expiry, restarts and changes made by another gateway."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text

from modelport.config import parse_config
from modelport.store import Store, UsageRow
from modelport.store.database import database_url as resolve_url
from modelport.store.keys import hash_secret, period_start
from modelport.store.schema import keys as keys_table


def _store(url: str) -> Store:
    return Store.from_config(parse_config({"server": {"database_url": url}}))


def run(coroutine):  # noqa: ANN001, ANN201
    return asyncio.run(coroutine)


def test_secret_is_shown_once_and_only_its_hash_is_stored(database_url):
    async def scenario():
        store = _store(database_url)
        await store.start()
        try:
            first = await store.keys.create("team-a", models=["m1"], rpm=3)
            second = await store.keys.create("team-b")
            async with store._engine.connect() as connection:
                rows = (await connection.execute(select(keys_table))).mappings().all()
        finally:
            await store.stop()
        return first, second, rows

    first, second, rows = run(scenario())
    assert first.secret.startswith("sk-mp-") and len(first.secret) >= 46
    assert first.secret != second.secret and first.key.id != second.key.id
    stored = {row["id"]: row for row in rows}
    assert stored[first.key.id]["secret_hash"] == hash_secret(first.secret)
    for row in rows:
        assert all(first.secret not in str(value) and second.secret not in str(value)
                   for value in row.values())
    assert first.key.prefix == first.secret[:10]


def test_authenticate_answers_from_memory_and_reflects_changes_at_once(database_url):
    async def scenario():
        store = _store(database_url)
        await store.start()
        try:
            created = await store.keys.create("team-a", models=["m1"], rpm=3, tpm=100)
            before = store.keys.authenticate(created.secret)
            await store.keys.update(created.key.id, {"rpm": None, "models": ["m1", "m2"]})
            after_patch = store.keys.authenticate(created.secret)
            await store.keys.revoke(created.key.id)
            after_revoke = store.keys.authenticate(created.secret)
            await store._engine.dispose()  # no database from here on: lookups still answer
            offline = store.keys.authenticate(created.secret)
            unknown = [store.keys.authenticate(s) for s in
                       ("sk-mp-" + "x" * 43, "static-key", "", created.secret + "x")]
        finally:
            await store.stop()
        return before, after_patch, after_revoke, offline, unknown

    before, after_patch, after_revoke, offline, unknown = run(scenario())
    assert (before.rpm, before.tpm, before.models, before.revoked) == (3, 100, ("m1",), False)
    assert before.refusal() is None and before.allows("m1") and not before.allows("m2")
    assert (after_patch.rpm, after_patch.tpm, after_patch.models) == (None, 100, ("m1", "m2"))
    assert after_revoke.revoked and "has been revoked" in after_revoke.refusal()
    assert offline == after_revoke
    assert unknown == [None, None, None, None]


def test_update_changes_only_the_fields_given(database_url):
    async def scenario():
        store = _store(database_url)
        await store.start()
        try:
            created = await store.keys.create(
                "k", rpm=5, tpm=50, max_parallel=2, budget_tokens=1000, budget_period="day",
                metadata={"team": "x"})
            renamed = await store.keys.update(created.key.id, {"name": "k2"})
            cleared = await store.keys.update(created.key.id, {"metadata": None, "tpm": None})
            missing = await store.keys.update("key_missing", {"rpm": 1})
            revoked_missing = await store.keys.revoke("key_missing")
        finally:
            await store.stop()
        return created.key, renamed, cleared, missing, revoked_missing

    original, renamed, cleared, missing, revoked_missing = run(scenario())
    assert renamed.name == "k2"
    assert (renamed.rpm, renamed.tpm, renamed.max_parallel, renamed.budget_tokens,
            renamed.budget_period, dict(renamed.metadata)) == (5, 50, 2, 1000, "day", {"team": "x"})
    assert (cleared.name, cleared.tpm, dict(cleared.metadata), cleared.rpm) == ("k2", None, {}, 5)
    assert missing is None and revoked_missing is None
    assert original.created_at == cleared.created_at


def test_expiry_is_checked_at_lookup_time(database_url):
    expires = datetime.now(UTC) + timedelta(hours=1)

    async def scenario():
        store = _store(database_url)
        await store.start()
        try:
            created = await store.keys.create("temp", expires_at=expires)
            return store.keys.authenticate(created.secret)
        finally:
            await store.stop()

    key = run(scenario())
    assert key.expires_at == expires.replace(microsecond=key.expires_at.microsecond)
    assert key.expires_at.tzinfo is not None
    assert key.refusal() is None
    later = expires.timestamp() + 1
    assert key.expired(later) and "expired at" in key.refusal(later)


def test_keys_survive_a_restart_and_migrations_are_versioned(database_url):
    async def first_run():
        store = _store(database_url)
        await store.start()
        try:
            return await store.keys.create("persist", rpm=7)
        finally:
            await store.stop()

    async def second_run(secret: str):
        store = _store(database_url)
        await store.start()  # the schema exists: migrating again is a no-op
        try:
            async with store._engine.connect() as connection:
                version = (await connection.execute(
                    text("SELECT version_num FROM alembic_version"))).scalar_one()
            return store.keys.authenticate(secret), await store.keys.list(), version
        finally:
            await store.stop()

    created = run(first_run())
    found, listed, version = run(second_run(created.secret))
    assert found is not None and found.rpm == 7 and found.id == created.key.id
    assert [key.id for key in listed] == [created.key.id]
    assert version == "0001"


def test_another_gateways_changes_arrive_with_the_reload(database_url):
    async def scenario():
        first, second = _store(database_url), _store(database_url)
        await first.start()
        await second.start()
        try:
            created = await first.keys.create("shared")
            unseen = second.keys.authenticate(created.secret)
            await second.keys.reload()  # what the background refresh does every few seconds
            seen = second.keys.authenticate(created.secret)
            await first.keys.revoke(created.key.id)
            await second.keys.reload()
            return unseen, seen, second.keys.authenticate(created.secret)
        finally:
            await first.stop()
            await second.stop()

    unseen, seen, revoked = run(scenario())
    assert unseen is None and seen is not None and not seen.revoked
    assert revoked.revoked


def test_tokens_used_counts_stored_and_pending_rows_since_a_time(database_url):
    async def scenario():
        store = _store(database_url)
        await store.start()
        try:
            key = (await store.keys.create("budget", budget_tokens=100)).key
            old = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
            store.usage.record(UsageRow("m", "/v1/chat/completions", 200, key_id=key.id,
                                        prompt_tokens=40, completion_tokens=2, at=old))
            store.usage.record(UsageRow("m", "/v1/chat/completions", 200, key_id="other",
                                        prompt_tokens=1000))
            await store.usage.flush()
            store.usage.record(UsageRow("m", "/v1/chat/completions", 200, key_id=key.id,
                                        prompt_tokens=10, completion_tokens=5))  # not written
            since = datetime(2025, 6, 1, tzinfo=UTC)
            return (await store.keys.tokens_used(key.id),
                    await store.keys.tokens_used(key.id, since), store.usage.pending)
        finally:
            await store.stop()

    total, recent, pending = run(scenario())
    assert (total, recent, pending) == (57, 15, 1)


def test_budget_periods_start_at_utc_midnight_and_the_first_of_the_month():
    now = datetime(2026, 3, 17, 15, 4, 5, tzinfo=UTC)
    assert period_start("day", now) == datetime(2026, 3, 17, tzinfo=UTC)
    assert period_start("month", now) == datetime(2026, 3, 1, tzinfo=UTC)
    assert period_start("total", now) is None


def test_database_url_defaults_to_sqlite_in_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPORT_DATA_DIR", str(tmp_path / "from-env"))
    assert resolve_url(parse_config({})) == \
        f"sqlite+aiosqlite:///{tmp_path / 'from-env' / 'modelport.db'}"
    configured = parse_config({"server": {"data_dir": "state"}}, base_dir=str(tmp_path))
    assert resolve_url(configured) == f"sqlite+aiosqlite:///{tmp_path / 'state' / 'modelport.db'}"
    postgres = parse_config({"server": {"database_url": "postgresql://u:pw@db:5432/mp"}})
    assert resolve_url(postgres) == "postgresql+asyncpg://u:pw@db:5432/mp"
    assert "pw" not in repr(postgres.server) and "pw" not in str(postgres.server)
