"""Counters behind shared per-key limits, each a number under a name that may expire, in a
Redis every gateway points at (limits.shared). Each check-and-add is atomic, through one Lua
script, so two gateways can never both take the last request of a window. Which window a
count belongs to is in its name (the caller's business); `expire_s` only lets old windows
go (0: never).
"""

from __future__ import annotations

from typing import Protocol


class Counters(Protocol):
    async def take(self, key: str, amount: int, limit: int, expire_s: int) -> tuple[bool, int]:
        """Add `amount` unless the count would pass `limit`. Returns whether it was added
        and the count (after adding, or as it stands)."""

    async def add(self, key: str, amount: int, expire_s: int) -> int:
        """Add `amount` (negative to give back; never below zero); the new count."""

    async def count(self, key: str) -> int: ...

    async def seed(self, key: str, amount: int, expire_s: int) -> int:
        """Start the count at `amount` unless it exists already; the count."""

    async def close(self) -> None: ...


# KEYS[1] = counter; ARGV = amount, limit, expiry seconds (0: none)
_TAKE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if current + amount > tonumber(ARGV[2]) then return {0, current} end
local after = redis.call('INCRBY', KEYS[1], amount)
if tonumber(ARGV[3]) > 0 and redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return {1, after}
"""
# KEYS[1] = counter; ARGV = amount, expiry seconds (0: none). Never below zero.
_ADD = """
local after = redis.call('INCRBY', KEYS[1], ARGV[1])
if after < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') after = 0 end
if tonumber(ARGV[2]) > 0 and redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return after
"""


class RedisCounters:
    """Counts in a shared Redis, so every gateway counts against one limit."""

    def __init__(self, url: str, prefix: str = "modelport:") -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(url)
        self._prefix = prefix
        self._take = self._redis.register_script(_TAKE)
        self._add = self._redis.register_script(_ADD)

    async def take(self, key: str, amount: int, limit: int, expire_s: int) -> tuple[bool, int]:
        taken, count = await self._take(keys=[self._prefix + key], args=[amount, limit, expire_s])
        return bool(taken), int(count)

    async def add(self, key: str, amount: int, expire_s: int) -> int:
        return int(await self._add(keys=[self._prefix + key], args=[amount, expire_s]))

    async def count(self, key: str) -> int:
        return int(await self._redis.get(self._prefix + key) or 0)

    async def seed(self, key: str, amount: int, expire_s: int) -> int:
        name = self._prefix + key
        await self._redis.set(name, amount, nx=True, ex=expire_s or None)
        return int(await self._redis.get(name) or 0)

    async def close(self) -> None:
        await self._redis.aclose()
