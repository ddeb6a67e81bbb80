"""Keys and usage over one database, opened with the gateway and closed with it."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.config import Config, Price
from modelport.store.database import database_url, migrate, open_engine, redacted
from modelport.store.keys import KeyStore, VirtualKey
from modelport.store.usage import UsageRecorder, UsageRow

__all__ = ["KeyStore", "Store", "UsageRecorder", "UsageRow", "VirtualKey"]

logger = logging.getLogger("modelport.store")


class StoreError(RuntimeError):
    """The database could not be opened or migrated at start-up."""


class Store:
    def __init__(self, url: str, prices: dict[str, Price] | None = None) -> None:
        self.url = url
        self.usage = UsageRecorder(prices)
        self.keys = KeyStore(self.usage)
        self._engine: AsyncEngine | None = None

    @classmethod
    def from_config(cls, config: Config) -> "Store":
        prices = {label: model.price for model in config.models if model.price is not None
                  for label in (model.name, *model.aliases)}
        return cls(database_url(config), prices)

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
