"""Routing state shared by every gateway on one Redis (`server.redis_url`): cool-downs,
paused replicas, and the requests each gateway has in flight on the replicas they share.

Nothing here is on a request's path. A background task, every `interval_s`, writes this
gateway's in-flight counts (one hash per gateway that expires after `ttl_s`, so the counts
of a gateway that died vanish) and reads the other gateways' counts and the cool-downs in
force, in one Lua call. A cool-down or pause that starts here is written at once by a task
of its own, with an expiry equal to its length. Expiries are reckoned in Redis's clock
(its TIME), so gateways on machines whose clocks differ agree on them.

Replicas are matched across gateways by model name and base URL (`deployments:` entries,
registered workers, an online model's API); a gateway's own workers are private to it and
are not shared. While Redis cannot be reached, each gateway routes on its own state (the
other gateways' counts are dropped, cool-downs it already knew run out as they would) and
picks the shared state up again when Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from modelport.routing.deployments import Deployment, Replica
from modelport.routing.registry import ModelRegistry
from modelport.routing.replica import DeploymentStatus

logger = logging.getLogger("modelport.routing")

SYNC_INTERVAL_S = 0.25
GATEWAY_TTL_S = 2.0
KEY_PREFIX = "modelport:routing:"
_REDIS_TIMEOUT_S = 1.0

# KEYS: gateways (zset id -> expiry ms), cool-downs (zset member -> expiry ms), their notes
# (hash member -> "gateway-id<TAB>why"). ARGV: this gateway's id, TTL ms, the prefix of the
# count hashes, then replica/count pairs. Returns the other gateways' replica/count pairs
# and, per cool-down in force, its member, milliseconds left and note.
_SYNC = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local mine = ARGV[3] .. ARGV[1]
redis.call('DEL', mine)
if #ARGV > 3 then
  redis.call('HSET', mine, unpack(ARGV, 4))
  redis.call('PEXPIRE', mine, ttl)
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local counts = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if id ~= ARGV[1] then
    for _, value in ipairs(redis.call('HGETALL', ARGV[3] .. id)) do
      counts[#counts + 1] = value
    end
  end
end
local ended = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #ended > 0 then
  redis.call('ZREM', KEYS[2], unpack(ended))
  redis.call('HDEL', KEYS[3], unpack(ended))
end
local cooling = {}
local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #live, 2 do
  cooling[#cooling + 1] = live[i]
  cooling[#cooling + 1] = tostring(tonumber(live[i + 1]) - now)
  cooling[#cooling + 1] = redis.call('HGET', KEYS[3], live[i]) or ''
end
return {counts, cooling}
"""

# KEYS: cool-downs, notes (as above). ARGV: member, milliseconds, note. A longer cool-down
# already in force is kept.
_COOL = """
local t = redis.call('TIME')
local ends = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
local current = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
if ends > current then
  redis.call('ZADD', KEYS[1], ends, ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
return 1
"""


def model_member(name: str) -> str:
    """How a model's cool-down is named in Redis."""
    return f"model\t{name}"


def replica_member(deployment: Deployment, replica: Replica) -> str:
    """How a replica is named in Redis: the same on every gateway that sends to it."""
    return f"replica\t{deployment.name}\t{replica.base_url}"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class SharedRouting:
    """This gateway's side of the shared state; also the failover's RoutingListener."""

    def __init__(self, registry: ModelRegistry, redis_url: str, *,
                 interval_s: float = SYNC_INTERVAL_S, ttl_s: float = GATEWAY_TTL_S,
                 prefix: str = KEY_PREFIX,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._registry = registry
        self._redis_url = redis_url
        self._interval_s = interval_s
        self._ttl_ms = int(ttl_s * 1000)
        self._keys = [prefix + "gateways", prefix + "cooldowns", prefix + "cooldown-notes"]
        self._count_prefix = prefix + "in-flight:"
        self._clock = clock
        self.gateway_id = secrets.token_hex(6)
        self._redis: Any = None
        self._sync: Any = None
        self._cool: Any = None
        self._task: asyncio.Task | None = None
        self._writes: set[asyncio.Task] = set()
        # Replicas shared with other gateways, by their name in Redis (rebuilt each round:
        # reloads and registered workers change them).
        self._shared: dict[str, tuple[Deployment, Replica]] = {}
        self.reachable = True  # whether the last exchange with Redis worked

    async def start(self) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # Short timeouts and no retries: a Redis that is gone must not hold the background
        # round (or a cool-down's write) for long; the next round tries again.
        self._redis = redis.from_url(self._redis_url, socket_timeout=_REDIS_TIMEOUT_S,
                                     socket_connect_timeout=_REDIS_TIMEOUT_S,
                                     retry=Retry(NoBackoff(), 0))
        self._sync = self._redis.register_script(_SYNC)
        self._cool = self._redis.register_script(_COOL)
        self._task = asyncio.create_task(self._run(), name="shared-routing-state")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._writes:
            await asyncio.wait(self._writes, timeout=_REDIS_TIMEOUT_S * 2)
            for write in list(self._writes):
                write.cancel()
        if self._redis is not None:
            # Bounded as a whole: a shutdown never waits on a Redis that stopped answering.
            try:  # the others stop counting this gateway's requests now, not at the TTL
                await asyncio.wait_for(self._say_goodbye(), _REDIS_TIMEOUT_S * 2)
            except Exception:  # noqa: BLE001 - the TTL removes them anyway
                pass
            self._redis = None

    async def _say_goodbye(self) -> None:
        try:
            await self._redis.delete(self._count_prefix + self.gateway_id)
            await self._redis.zrem(self._keys[0], self.gateway_id)
        finally:
            await self._redis.aclose()

    # -- RoutingListener: what this gateway takes out of rotation ------------------------

    def cooled_down(self, deployment: Deployment, seconds: float) -> None:
        self._publish(model_member(deployment.name), seconds, "failed requests")

    def paused(self, deployment: Deployment, replica: Replica, seconds: float,
               why: str) -> None:
        if not replica.is_ours:
            self._publish(replica_member(deployment, replica), seconds, why)

    def _publish(self, member: str, seconds: float, why: str) -> None:
        if self._redis is None or seconds <= 0:
            return
        task = asyncio.get_running_loop().create_task(
            self._write(member, int(seconds * 1000), f"{self.gateway_id}\t{why[:300]}"))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, member: str, milliseconds: int, note: str) -> None:
        try:
            await self._cool(keys=self._keys[1:], args=[member, milliseconds, note])
        except Exception as error:  # noqa: BLE001 - the others go on without it
            self._unreachable(error)

    # -- the background round -------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self.sync_once()
            except Exception as error:  # noqa: BLE001 - keep serving on local state
                self._unreachable(error)
                for _, replica in self._shared.values():
                    replica.remote_in_flight = 0  # unknown now: route on our own counts
            else:
                if not self.reachable:
                    logger.info("shared routing state: Redis reachable again")
                self.reachable = True
            await asyncio.sleep(self._interval_s)

    async def sync_once(self) -> None:
        """Publish this gateway's counts; take in the others' counts and the cool-downs."""
        self._shared = shared = {}
        args: list[Any] = [self.gateway_id, self._ttl_ms, self._count_prefix]
        for deployment in self._registry:
            for replica in deployment.replicas:
                if replica.is_ours:
                    continue
                member = replica_member(deployment, replica)
                shared[member] = (deployment, replica)
                if replica.in_flight > 0:
                    args += (member, replica.in_flight)
        counts, cooling = await self._sync(keys=self._keys, args=args)
        totals: dict[str, int] = {}
        for index in range(0, len(counts), 2):
            member = _text(counts[index])
            totals[member] = totals.get(member, 0) + int(counts[index + 1])
        for member, (_, replica) in shared.items():
            replica.remote_in_flight = totals.get(member, 0)
        now = self._clock()
        for index in range(0, len(cooling), 3):
            gateway, _, why = _text(cooling[index + 2]).partition("\t")
            if gateway != self.gateway_id:
                self._hold(_text(cooling[index]), now + int(cooling[index + 1]) / 1000, why)

    def _hold(self, member: str, until: float, why: str) -> None:
        """Apply another gateway's cool-down or pause (lasting until `until`) here."""
        kind, _, rest = member.partition("\t")
        if kind == "model":
            deployment = self._registry.named(rest)
            if deployment is not None and deployment.name == rest and \
                    deployment.cooldown.hold_until(until):
                logger.warning("model '%s' cooled down for %.0fs by another gateway",
                               rest, until - self._clock())
            return
        found = self._shared.get(member)
        if found is None:
            return
        replica = found[1]
        ready = replica.status is DeploymentStatus.READY
        if (ready or replica.paused_until) and until > replica.paused_until + 0.05:
            now = self._clock()
            replica.pause(f"paused by another gateway: {why}", until - now, now)
            if ready:
                logger.warning("replica %s paused for %.0fs by another gateway (%s)",
                               replica.name, until - now, why)

    def _unreachable(self, error: Exception) -> None:
        if self.reachable:
            logger.warning("shared routing state: Redis not reachable (%s: %s); routing on "
                           "this gateway's own state until it is back",
                           type(error).__name__, error)
        self.reachable = False
