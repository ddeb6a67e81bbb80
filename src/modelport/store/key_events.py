"""Key changes told to every gateway on one Redis (`server.redis_url`) at once.

Each gateway checks keys from memory (store.keys) and re-reads them from the database
every REFRESH_S. A revocation made through one gateway must not stay usable on the others
that long: after every change written here, a message on one Redis channel tells the
others, who re-read their keys from the database right away (the message carries no key:
the database stays the one place keys come from). While Redis is away the messages are
lost and the periodic re-read still catches every change; a gateway that gets back on the
channel re-reads once, for the changes it may have missed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets

from modelport.store.keys import KeyStore

logger = logging.getLogger("modelport.store")

CHANNEL = "modelport:keys-changed"
RETRY_S = 1.0  # how soon a lost subscription is tried again
_BOUND_S = 0.5  # a publish that takes longer is given up (the re-read catches it)


class KeyEvents:
    def __init__(self, keys: KeyStore, redis_url: str) -> None:
        self._keys = keys
        self._url = redis_url
        self._me = f"{os.getpid()}-{secrets.token_hex(4)}".encode()
        self._redis = None
        self._listening: asyncio.Task | None = None
        self._reloading: asyncio.Task | None = None
        self._again = False  # a message came during a re-read: one more after it
        self._publishing: set[asyncio.Task] = set()

    async def start(self) -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(self._url, socket_connect_timeout=_BOUND_S)
        self._keys.listeners.append(self._changed_here)
        self._listening = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        if self._changed_here in self._keys.listeners:
            self._keys.listeners.remove(self._changed_here)
        tasks = [t for t in (self._listening, self._reloading, *self._publishing) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()

    def _changed_here(self) -> None:
        task = asyncio.get_running_loop().create_task(self._publish())
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish(self) -> None:
        try:
            async with asyncio.timeout(_BOUND_S):
                await self._redis.publish(CHANNEL, self._me)  # type: ignore[union-attr]
        except Exception as error:  # noqa: BLE001 - the periodic re-read still catches it
            logger.debug("could not tell the other gateways of a key change: %s", error)

    async def _listen(self) -> None:
        missed = False
        while True:
            try:
                async with self._redis.pubsub() as channel:  # type: ignore[union-attr]
                    await channel.subscribe(CHANNEL)
                    if missed:
                        self._reload_soon()
                    async for message in channel.listen():
                        if message["type"] == "message" and message["data"] != self._me:
                            self._reload_soon()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Redis away: keys re-read every REFRESH_S
                missed = True
            await asyncio.sleep(RETRY_S)

    def _reload_soon(self) -> None:
        """Re-read the keys now; messages during a re-read make one more, not one each."""
        if self._reloading is not None and not self._reloading.done():
            self._again = True
            return
        self._reloading = asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        while True:
            self._again = False
            try:
                await self._keys.reload()
            except Exception as error:  # noqa: BLE001 - the database may be away
                logger.warning("could not re-read virtual keys after a change elsewhere: "
                               "%s: %s", type(error).__name__, error)
            if not self._again:
                return
