"""Counters behind per-key limits, each a number under a name that may expire.

Two stores with one interface: `LocalCounters` in this process (limits hold per gateway),
`RedisCounters` in a shared Redis (limits hold across every gateway pointed at it). Each
check-and-add is atomic: in Redis through one Lua script, so two gateways can never both
take the last request of a window. Which window a count belongs to is in its name (the
caller's business); `expire_s` only lets old windows go (0: never).
"""

from __future__ import annotations

import time
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


class LocalCounters:
    """Counts in this process's memory (no I/O: every call completes at once)."""

    _SWEEP_EVERY = 10_000

    def __init__(self, clock=time.monotonic) -> None:  # noqa: ANN001 (a clock for tests)
        self._clock = clock
        # Counts and their expiry times apart: a count changes on every request, its expiry
        # is set once, and no tuple is built per change.
        self._counts: dict[str, int] = {}
        self._expires: dict[str, float] = {}  # key -> when its count goes; absent: never
        self._writes = 0

    def _get(self, key: str) -> int:
        count = self._counts.get(key)
        if count is None:
            return 0
        expires = self._expires.get(key)
        if expires is not None and expires <= self._clock():
            del self._counts[key], self._expires[key]
            return 0
        return count

    def _set(self, key: str, count: int, expire_s: int) -> None:
        # Callers read the key first, so a count still here has not expired.
        if expire_s and key not in self._expires:
            self._expires[key] = self._clock() + expire_s
        self._counts[key] = count
        self._writes += 1
        if self._writes % self._SWEEP_EVERY == 0:
            now = self._clock()
            for gone in [k for k, at in self._expires.items() if at <= now]:
                del self._counts[gone], self._expires[gone]

    def add_now(self, key: str, amount: int, expire_s: int) -> int:
        """`add` without the event loop (nothing here waits on I/O)."""
        count = max(0, self._get(key) + amount)
        self._set(key, count, expire_s)
        return count

    async def take(self, key: str, amount: int, limit: int, expire_s: int) -> tuple[bool, int]:
        count = self._get(key)
        if count + amount > limit:
            return False, count
        self._set(key, count + amount, expire_s)
        return True, count + amount

    async def add(self, key: str, amount: int, expire_s: int) -> int:
        return self.add_now(key, amount, expire_s)

    async def count(self, key: str) -> int:
        return self._get(key)

    async def seed(self, key: str, amount: int, expire_s: int) -> int:
        self._get(key)  # lets an expired count go
        if key in self._counts:
            return self._counts[key]
        self._set(key, amount, expire_s)
        return amount

    async def close(self) -> None:
        return None


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
