"""Opening the database of keys and usage, and bringing its schema up to date.

SQLite (a file under the data folder) unless `server.database_url` names PostgreSQL,
which several gateways can share. Migrations are Alembic revisions shipped inside the
package and run at every start (a no-op when the schema is current).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from modelport.config import Config

DATA_DIR_ENV = "MODELPORT_DATA_DIR"
DEFAULT_DATA_DIR = "~/.local/share/modelport"
DATABASE_FILE = "modelport.db"
MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; gateways starting together take turns migrating a shared PostgreSQL.
_MIGRATION_LOCK_ID = 0x6D706F7274

logger = logging.getLogger("modelport.store")


def data_dir(config: Config) -> Path:
    """server.data_dir (relative to the config's folder), else $MODELPORT_DATA_DIR, else
    ~/.local/share/modelport."""
    configured = config.server.data_dir
    if configured is not None:
        path = Path(os.path.expanduser(configured))
        return path if path.is_absolute() else Path(config.base_dir) / path
    return Path(os.path.expanduser(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR))


def database_file(config: Config) -> str:
    """modelport.db in a folder the config names (server.data_dir) or for the built-in config;
    else one file per config file in the shared data folder, so two servers with different
    configs never share keys and usage: `<config name>-<hash of its path>.db`."""
    if config.server.data_dir is not None or config.source_file is None:
        return DATABASE_FILE
    digest = hashlib.sha256(config.source_file.encode("utf-8")).hexdigest()[:12]
    return f"{Path(config.source_file).stem}-{digest}.db"


def database_url(config: Config) -> str:
    """The SQLAlchemy URL with its async driver: asyncpg for PostgreSQL, aiosqlite else."""
    configured = config.server.database_url
    if configured is None:
        return f"sqlite+aiosqlite:///{data_dir(config) / database_file(config)}"
    url = make_url(str.__str__(configured))
    if url.get_backend_name() in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+asyncpg")
    else:
        url = url.set(drivername="sqlite+aiosqlite")
    return url.render_as_string(hide_password=False)


def redacted(url: str) -> str:
    """The URL as it may be logged or shown: without its password."""
    return make_url(url).render_as_string(hide_password=True)


def open_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True)
    # aiosqlite logs every single operation at DEBUG, which buries modelport's own lines
    # under `--log-level debug`.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
        # WAL lets the usage summary read while batches are written; NORMAL is durable
        # across a crash of the process (only a power loss may cost the last batch).
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    return engine


async def migrate(engine: AsyncEngine) -> None:
    """Upgrade the schema to the newest revision shipped with this version."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


def _upgrade(connection: Connection) -> None:
    # Alembic's own INFO lines (its plugins, dialect, transactional DDL) come on every
    # start; one line of ours says when the schema actually changed.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from alembic.runtime.migration import MigrationContext

    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
    before = MigrationContext.configure(connection).get_current_revision()
    settings = AlembicConfig()
    settings.set_main_option("script_location", str(MIGRATIONS))
    settings.attributes["connection"] = connection
    command.upgrade(settings, "head")
    after = MigrationContext.configure(connection).get_current_revision()
    if after != before:
        logger.info("database schema upgraded from revision %s to %s", before or "(none)", after)


def unreachable(error: BaseException) -> bool:
    """Whether `error` says the database is away (down, stopped, refusing connections),
    rather than that a query was wrong."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    if isinstance(error, (OperationalError, InterfaceError, OSError, TimeoutError)):
        return True
    cause = getattr(error, "orig", None) or error.__cause__
    # asyncpg's errors of a lost connection are not OSErrors; their names say so.
    return cause is not None and cause is not error and (
        unreachable(cause) or "Connection" in type(cause).__name__)
