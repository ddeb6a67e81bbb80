"""The counters behind shared per-key limits, in a Redis every gateway points at
(limits.shared). A request's admission is one Lua script: every limit is checked and, only
when all pass, its reservation and its request and slot are taken, so no other gateway or
process can come in between. Settling is one script too. Which window a count belongs to
is in its name (the caller's business); expiries only let old windows go.

Every call is bounded (CALL_BOUND_S, no retries): a Redis that is down or stopped raises
`CountersUnavailable` at once instead of holding the request, and the caller degrades.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

CALL_BOUND_S = 0.1
CONNECTIONS = 8
NO_LIMIT = -1


class CountersUnavailable(Exception):
    """Redis did not answer within the bound (down, stopped, or refusing)."""


@dataclass(frozen=True, slots=True)
class Names:
    """One key's counter names for one minute."""

    budget_used: str  # settled tokens of the budget period (rebuilt from the usage rows)
    budget_held: str  # tokens reserved by requests in flight
    tpm: str  # the minute's tokens, used and reserved
    rpm: str
    parallel: str


# Outcomes of the admission script; the numbers after the code say what was counted.
ADMITTED, BUDGET_MISSING, BUDGET_SPENT, BUDGET_SHORT, BUDGET_HELD, RESERVE_ABOVE_TPM, \
    TPM_SPENT, RPM_SPENT, PARALLEL_FULL = range(9)

# KEYS = budget used, budget held, tpm, rpm, parallel
# ARGV = reserve, budget limit, tpm limit, rpm limit, parallel limit (each -1: none),
#        minute expiry s, slot expiry s
_ADMIT = """
local reserve = tonumber(ARGV[1])
local budget, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
local rpm, parallel = tonumber(ARGV[4]), tonumber(ARGV[5])
local function bump(name, amount, expiry)
  local after = redis.call('INCRBY', name, amount)
  if redis.call('TTL', name) < 0 then redis.call('EXPIRE', name, expiry) end
  return after
end
local counted = -1
if budget >= 0 then
  local value = redis.call('GET', KEYS[1])
  if not value then return {1, 0, 0} end
  local used = tonumber(value)
  local held = tonumber(redis.call('GET', KEYS[2]) or '0')
  counted = used + held
  if used >= budget then return {2, used, held} end
  if used + reserve > budget then return {3, used, held} end
  if used + held + reserve > budget then return {4, used, held} end
end
local tokens = tonumber(redis.call('GET', KEYS[3]) or '0')
local requests = tonumber(redis.call('GET', KEYS[4]) or '0')
if tpm >= 0 then
  if reserve > tpm then return {5, tokens, requests} end
  if tokens + reserve > tpm then return {6, tokens, requests} end
end
if rpm >= 0 and requests >= rpm then return {7, requests, tokens} end
if parallel >= 0 then
  local running = tonumber(redis.call('GET', KEYS[5]) or '0')
  if running >= parallel then return {8, running, 0} end
  bump(KEYS[5], 1, ARGV[7])
end
if budget >= 0 and reserve > 0 then bump(KEYS[2], reserve, ARGV[7]) end
if tpm >= 0 and reserve > 0 then tokens = bump(KEYS[3], reserve, ARGV[6]) end
if rpm >= 0 then requests = bump(KEYS[4], 1, ARGV[6]) end
return {0, requests, tokens, counted}
"""

# KEYS = budget used, budget held, tpm, parallel
# ARGV = tokens used, tokens reserved, has budget, has tpm, holds a slot (each 0/1)
# A budget counter that is gone (Redis restarted) is left gone: the next admission
# rebuilds it from the usage rows, which hold this request's tokens too.
_SETTLE = """
local tokens, reserved = tonumber(ARGV[1]), tonumber(ARGV[2])
local function down(name, amount)
  if redis.call('DECRBY', name, amount) <= 0 then redis.call('DEL', name) end
end
if ARGV[3] == '1' then
  if reserved > 0 then down(KEYS[2], reserved) end
  if tokens > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('INCRBY', KEYS[1], tokens)
  end
end
if ARGV[4] == '1' and tokens ~= reserved and redis.call('EXISTS', KEYS[3]) == 1 then
  if redis.call('INCRBY', KEYS[3], tokens - reserved) < 0 then
    redis.call('SET', KEYS[3], 0, 'KEEPTTL')
  end
end
if ARGV[5] == '1' then down(KEYS[4], 1) end
return 0
"""

# KEYS = the gateways' sorted set; ARGV = this gateway's id, now, seconds one stays seen
_HEARTBEAT = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return redis.call('ZCARD', KEYS[1])
"""


class RedisCounters:
    """Counts in a shared Redis, so every gateway counts against one limit."""

    def __init__(self, url: str, prefix: str = "modelport:") -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        # No retries: a request must not wait on a Redis that is away (the caller degrades).
        # A few connections, opened at start (`warm`) and shared by every request: a burst
        # that opened one each spent longer connecting than the bound.
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=CONNECTIONS, socket_timeout=CALL_BOUND_S,
            socket_connect_timeout=CALL_BOUND_S, retry=Retry(NoBackoff(), 0))
        self._redis = redis.Redis(connection_pool=pool)
        self._errors = (RedisError, OSError, TimeoutError)
        self._prefix = prefix
        options = self._redis.connection_pool.connection_kwargs
        # Named in log lines: where, never the password.
        self.where = f"Redis at {options.get('host', '?')}:{options.get('port', '?')}"
        self._admit = self._redis.register_script(_ADMIT)
        self._settle = self._redis.register_script(_SETTLE)
        self._heartbeat = self._redis.register_script(_HEARTBEAT)

    def names(self, key_id: str, minute: int, budget: str | None) -> Names:
        prefix = self._prefix
        budget_name = prefix + (budget or f"budget:{key_id}:none")
        return Names(budget_name, budget_name + ":held", f"{prefix}tpm:{key_id}:{minute}",
                     f"{prefix}rpm:{key_id}:{minute}", f"{prefix}par:{key_id}")

    async def admit(self, names: Names, reserve: int, budget: int, tpm: int, rpm: int,
                    parallel: int, minute_expiry_s: int, slot_expiry_s: int) -> list[int]:
        """[outcome, count, count]: see ADMITTED and the refusals after it; ADMITTED adds
        the budget's used and held tokens before this request (-1: no budget)."""
        keys = [names.budget_used, names.budget_held, names.tpm, names.rpm, names.parallel]
        args = [reserve, budget, tpm, rpm, parallel, minute_expiry_s, slot_expiry_s]
        return [int(n) for n in await self._bounded(self._admit(keys=keys, args=args))]

    async def settle(self, names: Names, tokens: int, reserved: int, budget: bool, tpm: bool,
                     slot: bool) -> None:
        keys = [names.budget_used, names.budget_held, names.tpm, names.parallel]
        await self._bounded(self._settle(keys=keys, args=[
            tokens, reserved, int(budget), int(tpm), int(slot)]))

    async def seed(self, name: str, amount: int, expire_s: int) -> None:
        """Start a budget counter at `amount` unless another gateway started it first."""
        await self._bounded(self._redis.set(name, amount, nx=True, ex=expire_s or None))

    async def heartbeat(self, gateway: str, now: float, seen_s: int) -> int:
        """Say this gateway is alive; how many were seen within `seen_s`."""
        return int(await self._bounded(self._heartbeat(
            keys=[self._prefix + "gateways"], args=[gateway, now, seen_s])))

    async def warm(self) -> None:
        """Open the connections and load the scripts before requests need them."""
        async def one() -> None:
            await self._bounded(self._redis.ping())

        await asyncio.gather(*(one() for _ in range(CONNECTIONS)))
        for script in (self._admit, self._settle, self._heartbeat):
            await self._bounded(self._redis.script_load(script.script))

    async def _bounded(self, call):  # noqa: ANN001, ANN202
        try:
            async with asyncio.timeout(CALL_BOUND_S):
                return await call
        except self._errors as error:
            said = str(error) or f"no answer within {CALL_BOUND_S * 1000:.0f} ms"
            raise CountersUnavailable(f"{type(error).__name__}: {said}") from error

    async def close(self) -> None:
        try:
            await self._redis.aclose()
        except self._errors:
            pass
