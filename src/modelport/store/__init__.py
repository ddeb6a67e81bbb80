"""Keys and usage over one database, opened with the gateway and closed with it."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.config import Config, Price
from modelport.store.database import data_dir, database_url, migrate, open_engine, redacted
from modelport.store.journal import UsageJournal
from modelport.store.keys import KeyStore, VirtualKey
from modelport.store.sqlite_usage import sqlite_file
from modelport.store.usage import UsageRecorder, UsageRow

__all__ = ["KeyStore", "Store", "UsageRecorder", "UsageRow", "VirtualKey"]

logger = logging.getLogger("modelport.store")


class StoreError(RuntimeError):
    """The database could not be opened or migrated at start-up."""


class Store:
    def __init__(self, url: str, prices: dict[str, Price] | None = None,
                 journal: UsageJournal | None = None) -> None:
        self.url = url
        self.usage = UsageRecorder(prices, journal=journal)
        self.keys = KeyStore(self.usage)
        self._engine: AsyncEngine | None = None

    @classmethod
    def from_config(cls, config: Config) -> "Store":
        prices = {label: model.price for model in config.models if model.price is not None
                  for label in (model.name, *model.aliases)}
        url = database_url(config)
        return cls(url, prices, _journal_beside(url, config))

    async def start(self) -> None:
        engine = open_engine(self.url)
        try:
            await migrate(engine)
            await self.usage.start(engine)
            await self.keys.start(engine)
        except Exception as error:
            await engine.dispose()
            raise StoreError(f"cannot open the database {redacted(self.url)}: "
                             f"{type(error).__name__}: {error}") from None
        self._engine = engine
        logger.info("keys and usage in %s", redacted(self.url))

    async def stop(self) -> None:
        if self._engine is None:
            return
        await self.keys.stop()
        await self.usage.close()
        await self._engine.dispose()
        self._engine = None


def _journal_beside(url: str, config: Config) -> UsageJournal | None:
    """The usage journal beside a SQLite file, or in the data folder for a database
    elsewhere; none for an in-memory database (nothing outlives the process anyway)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        file = sqlite_file(parsed.database)
        if file is None:
            return None
        return UsageJournal(Path(file).parent, Path(file).stem + "-usage")
    return UsageJournal(data_dir(config), "usage-" + (parsed.database or "db"))
