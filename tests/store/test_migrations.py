"""The shipped migrations build exactly the schema the code queries (schema.py), on
SQLite and on PostgreSQL, and running them again changes nothing."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from modelport.config import parse_config
from modelport.store.database import database_url as resolve_url
from modelport.store.database import migrate, open_engine
from modelport.store.schema import metadata


def test_migrations_match_the_schema_and_are_idempotent(database_url):
    url = resolve_url(parse_config({"server": {"database_url": database_url}}))

    async def scenario():
        engine = open_engine(url)
        try:
            await migrate(engine)
            await migrate(engine)  # a second start finds the schema current
            async with engine.connect() as connection:
                differences = await connection.run_sync(
                    lambda c: compare_metadata(MigrationContext.configure(c), metadata))
                tables = await connection.run_sync(lambda c: sorted(inspect(c).get_table_names()))
                indexes = await connection.run_sync(
                    lambda c: sorted(i["name"] for i in inspect(c).get_indexes("usage")))
        finally:
            await engine.dispose()
        return differences, tables, indexes

    differences, tables, indexes = asyncio.run(scenario())
    assert differences == []
    assert tables == ["alembic_version", "keys", "usage", "usage_daily"]
    assert indexes == ["ix_usage_at", "ix_usage_key_at"]
