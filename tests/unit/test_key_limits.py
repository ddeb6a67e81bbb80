"""Per-key limits on both limiters: in-process, and shared in a real redis-server."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from dataclasses import dataclass

import pytest

from modelport.errors import ModelportError, PermissionDeniedError
from modelport.limits.admission import KeyLimitError
from modelport.limits.counters import RedisCounters
from modelport.limits.local import LocalKeyLimiter
from modelport.limits import shared
from modelport.limits.shared import SharedKeyLimiter
from support.redis_server import RedisServer

NOON = dt.datetime(2026, 12, 1, 12, 0, 10, tzinfo=dt.timezone.utc).timestamp()


@dataclass(frozen=True)
class Key:
    id: str = "k1"
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_tokens: int | None = None
    budget_period: str = "total"


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "redis"])
def make_limiter(request, redis_server):
    made = []

    def make(tokens_used=None, clock=None):
        clock = clock or Clock()
        if request.param == "local":
            limiter = LocalKeyLimiter(tokens_used=tokens_used, clock=clock)
        else:
            # A fresh random prefix per limiter: every test counts in the same fixed minute,
            # so counts of other tests (or earlier runs on this server) must never leak in.
            counters = RedisCounters(redis_server.url, prefix=f"t{secrets.token_hex(6)}:")
            limiter = SharedKeyLimiter(counters, tokens_used=tokens_used, clock=clock)
        made.append(limiter)
        return limiter

    return make


def run(coroutine):
    return asyncio.run(coroutine)


def test_rpm_admits_up_to_the_limit_then_429_with_headers(make_limiter):
    async def scenario():
        limiter = make_limiter()
        key = Key(rpm=3)
        admitted = [await limiter.admit(key) for _ in range(3)]
        with pytest.raises(KeyLimitError) as refused:
            await limiter.admit(key)
        return admitted, refused.value

    admitted, error = run(scenario())
    assert [a.headers["x-ratelimit-remaining-requests"] for a in admitted] == ["2", "1", "0"]
    assert admitted[0].headers["x-ratelimit-limit-requests"] == "3"
    assert admitted[0].headers["x-ratelimit-reset-requests"] == "50s"
    assert error.status == 429 and error.code == "rpm_exceeded"
    assert error.headers["Retry-After"] == "50"
    assert error.headers["x-ratelimit-remaining-requests"] == "0"


def test_rpm_renews_in_the_next_minute(make_limiter):
    async def scenario():
        clock = Clock()
        limiter = make_limiter(clock=clock)
        await limiter.admit(Key(rpm=1))
        clock.now += 60
        return await limiter.admit(Key(rpm=1))

    assert run(scenario()).headers["x-ratelimit-remaining-requests"] == "0"


def test_tpm_counts_real_usage_and_refuses_once_spent(make_limiter):
    async def scenario():
        limiter = make_limiter()
        key = Key(tpm=100)
        first = await limiter.admit(key, reserve=10)
        await first.settle(60)
        second = await limiter.admit(key, reserve=10)
        await second.settle(35)
        with pytest.raises(KeyLimitError) as refused:
            await limiter.admit(key, reserve=10)
        return second, refused.value

    second, error = run(scenario())
    assert second.headers["x-ratelimit-remaining-tokens"] == "30"  # 60 used, 10 held
    assert error.code == "tpm_exceeded"
    assert error.headers["x-ratelimit-remaining-tokens"] == "5"  # 95 used: 10 do not fit


def test_a_reservation_above_tpm_is_refused_up_front(make_limiter):
    async def scenario():
        limiter = make_limiter()
        await limiter.admit(Key(tpm=100), reserve=100)
        with pytest.raises(KeyLimitError, match="up to 101 tokens"):
            await limiter.admit(Key(id="k2", tpm=100), reserve=101)

    run(scenario())


def test_reservations_hold_tpm_until_settled_and_give_back_the_rest(make_limiter):
    async def scenario():
        limiter = make_limiter()
        key = Key(tpm=100)
        held = [await limiter.admit(key, reserve=40) for _ in range(2)]
        with pytest.raises(KeyLimitError) as refused:
            await limiter.admit(key, reserve=40)  # 80 held: 40 more would pass 100
        await held[0].settle(5)  # 35 of its 40 come back
        third = await limiter.admit(key, reserve=40)
        return refused.value, third

    error, third = run(scenario())
    assert error.code == "tpm_exceeded"
    assert third.headers["x-ratelimit-remaining-tokens"] == "15"  # 5 + 40 + 40 counted


@pytest.mark.parametrize("concurrent", [16, 50])
def test_concurrent_requests_never_spend_past_a_budget(make_limiter, concurrent):
    async def scenario():
        limiter = make_limiter()
        key = Key(budget_tokens=200, budget_period="total")

        async def request():
            held = await limiter.admit(key, reserve=110)  # prompt 10 + max_tokens 100
            await asyncio.sleep(0.01)
            await held.settle(110)  # it used all it could
            return 110

        outcomes = await asyncio.gather(*(request() for _ in range(concurrent)),
                                        return_exceptions=True)
        spent = sum(o for o in outcomes if isinstance(o, int))
        refusals = [o for o in outcomes if not isinstance(o, int)]
        return spent, refusals

    spent, refusals = run(scenario())
    assert spent == 110  # a second 110 never fits in 200
    assert len(refusals) == concurrent - 1
    assert {r.code for r in refusals} <= {"budget_reserved", "budget_exhausted"}


def test_budget_refusals_say_whether_spent_held_or_too_big(make_limiter):
    async def scenario():
        limiter = make_limiter()
        key = Key(budget_tokens=100, budget_period="total")
        first = await limiter.admit(key, reserve=60)
        with pytest.raises(KeyLimitError) as held:
            await limiter.admit(key, reserve=50)
        await first.settle(30)
        with pytest.raises(PermissionDeniedError) as too_big:
            await limiter.admit(key, reserve=71)
        await (await limiter.admit(key, reserve=70)).settle(70)
        with pytest.raises(PermissionDeniedError) as spent:
            await limiter.admit(key, reserve=1)
        return held.value, too_big.value, spent.value

    held, too_big, spent = run(scenario())
    assert held.status == 429 and held.code == "budget_reserved"
    assert held.headers["Retry-After"] == "1"
    assert too_big.status == 403 and "70 left" in too_big.message
    assert spent.code == "budget_exhausted" and "is spent: 100 used" in spent.message


def test_max_parallel_holds_until_settled_and_gives_back_the_rpm_it_took(make_limiter):
    async def scenario():
        limiter = make_limiter()
        key = Key(rpm=10, max_parallel=2)
        one, two = await limiter.admit(key), await limiter.admit(key)
        with pytest.raises(KeyLimitError) as refused:
            await limiter.admit(key)
        await one.settle(None)
        await one.settle(None)  # settling twice gives back one slot only
        three = await limiter.admit(key)
        with pytest.raises(KeyLimitError):
            await limiter.admit(key)
        return refused.value, two, three

    error, two, three = run(scenario())
    assert error.code == "max_parallel_exceeded"
    # The refused requests did not use up the minute's requests.
    assert two.headers["x-ratelimit-remaining-requests"] == "8"
    assert three.headers["x-ratelimit-remaining-requests"] == "7"


def test_daily_budget_refuses_with_retry_after_until_midnight(make_limiter):
    async def scenario():
        clock = Clock()
        limiter = make_limiter(clock=clock)
        key = Key(budget_tokens=50, budget_period="day")
        await (await limiter.admit(key)).settle(50)
        with pytest.raises(KeyLimitError) as refused:
            await limiter.admit(key)
        clock.now += 12 * 3600  # the next UTC day
        await limiter.admit(key)
        return refused.value

    error = run(scenario())
    assert error.code == "budget_exhausted"
    assert int(error.headers["Retry-After"]) == 12 * 3600 - 10 + 1


def test_total_budget_starts_from_the_usage_store_and_is_final(make_limiter):
    asked = []

    async def tokens_used(key_id, since):
        asked.append((key_id, since))
        return 990

    async def scenario():
        limiter = make_limiter(tokens_used=tokens_used)
        key = Key(budget_tokens=1000, budget_period="total")
        await (await limiter.admit(key)).settle(10)
        with pytest.raises(PermissionDeniedError) as refused:
            await limiter.admit(key)
        return refused.value

    error = run(scenario())
    assert error.status == 403 and "1000 used" in error.message
    assert asked == [("k1", dt.datetime.fromtimestamp(0, dt.timezone.utc))]


def test_two_limiters_on_one_redis_share_a_key_rpm(redis_server):
    async def scenario():
        prefix = "shared-test:"
        a = SharedKeyLimiter(RedisCounters(redis_server.url, prefix=prefix), clock=Clock())
        b = SharedKeyLimiter(RedisCounters(redis_server.url, prefix=prefix), clock=Clock())
        key = Key(id="shared", rpm=4)
        results = await asyncio.gather(*(limiter.admit(key) for limiter in [a, b] * 4),
                                        return_exceptions=True)
        return results

    results = run(scenario())
    assert sum(not isinstance(r, Exception) for r in results) == 4
    assert all(isinstance(r, KeyLimitError) for r in results if isinstance(r, Exception))


def test_a_burst_of_first_requests_asks_the_usage_store_once(make_limiter):
    asked = []

    async def tokens_used(key_id, since):
        asked.append(key_id)
        await asyncio.sleep(0.05)  # a database query
        return 100

    async def scenario():
        limiter = make_limiter(tokens_used=tokens_used)
        key = Key(budget_tokens=1000, budget_period="month")
        admitted = await asyncio.gather(*(limiter.admit(key) for _ in range(20)))
        await limiter.admit(key)
        return admitted

    assert len(run(scenario())) == 20
    assert asked == ["k1"]


def test_a_usage_store_that_cannot_answer_leaves_the_budget_counting_from_now():
    # One gateway counting in process: nobody else spends its keys' budgets meanwhile.
    async def tokens_used(key_id, since):
        raise ConnectionError("database away")

    async def scenario():
        limiter = LocalKeyLimiter(tokens_used=tokens_used, clock=Clock())
        key = Key(budget_tokens=10, budget_period="month")
        await (await limiter.admit(key)).settle(10)
        with pytest.raises(KeyLimitError):
            await limiter.admit(key)

    run(scenario())


def test_a_shared_budget_is_never_counted_from_zero_while_the_usage_store_is_away(tmp_path):
    # Redis restarted empty while the database is away: counting from zero could spend a
    # budget twice. The last count this gateway saw stands; a key never counted here
    # waits (503) until the store answers.
    redis = RedisServer(tmp_path)
    store = {"away": False}

    async def tokens_used(key_id, since):
        if store["away"]:
            raise ConnectionError("database away")
        return 90

    async def scenario():
        import redis as redis_client

        limiter = SharedKeyLimiter(RedisCounters(redis.url, prefix="away:"), tokens_used,
                                   clock=Clock())
        await limiter.start()
        seen, unseen = Key(id="seen", budget_tokens=100), Key(id="unseen", budget_tokens=100)
        await (await limiter.admit(seen, reserve=5)).settle(5)  # 95 of 100 counted
        store["away"] = True
        redis_client.Redis.from_url(redis.url).flushall()
        with pytest.raises(PermissionDeniedError) as short:
            await limiter.admit(seen, reserve=10)
        with pytest.raises(ModelportError) as unknown:
            await limiter.admit(unseen, reserve=10)
        store["away"] = False
        redis_client.Redis.from_url(redis.url).flushall()
        back = await limiter.admit(unseen, reserve=10)  # the store answers: 90 + 10 fit
        await back.settle(10)
        await limiter.close()
        return short.value, unknown.value

    try:
        short, unknown = run(scenario())
    finally:
        redis.stop()
    assert "has 5 left" in short.message
    assert unknown.status == 503 and unknown.code == "budget_unavailable"
    assert unknown.headers["Retry-After"]


def test_tokens_count_in_the_minute_the_request_was_admitted_in(make_limiter):
    async def scenario():
        clock = Clock()
        limiter = make_limiter(clock=clock)
        key = Key(tpm=100)
        first = await limiter.admit(key)
        clock.now += 60  # the answer ends in the next minute
        second = await limiter.admit(key)
        await first.settle(100)
        return second, await limiter.admit(key)

    second, third = run(scenario())
    assert second.headers["x-ratelimit-remaining-tokens"] == "100"
    assert third.headers["x-ratelimit-remaining-tokens"] == "100"


def test_local_limits_forget_idle_keys_but_not_a_request_in_flight():
    async def scenario():
        limiter = LocalKeyLimiter(clock=Clock())
        limiter._MAX_KEYS = 3
        busy = Key(id="busy", max_parallel=1)
        held = await limiter.admit(busy)
        for index in range(10):
            await (await limiter.admit(Key(id=f"idle{index}", max_parallel=1))).settle(None)
        with pytest.raises(KeyLimitError) as refused:
            await limiter.admit(busy)
        await held.settle(None)
        await limiter.admit(busy)
        return limiter, refused.value

    limiter, error = run(scenario())
    assert error.code == "max_parallel_exceeded"
    assert len(limiter._minutes) <= 4


def test_an_outage_divides_each_limit_by_the_gateways_last_seen(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(shared, "HEARTBEAT_S", 0.05)
    redis = RedisServer(tmp_path)

    async def scenario():
        limiters = [SharedKeyLimiter(RedisCounters(redis.url, prefix="outage:"), clock=Clock())
                    for _ in range(2)]
        for limiter in limiters:
            await limiter.start()
        await asyncio.sleep(0.3)  # each has seen both
        redis.stop()
        key = Key(id="divided", rpm=4)
        admitted = 0
        with pytest.raises(KeyLimitError):
            for _ in range(5):
                await limiters[0].admit(key)
                admitted += 1
        degraded = limiters[0].degraded
        for limiter in limiters:
            await limiter.close()
        return admitted, degraded

    try:
        admitted, degraded = run(scenario())
    finally:
        redis.stop()
    assert degraded and admitted == 2  # 4 per minute, 2 gateways seen: 2 here
    said = [r.getMessage() for r in caplog.records if "is unreachable" in r.getMessage()]
    assert len(said) == 1 and "divided by the 2 gateway(s)" in said[0]


def test_a_budget_counted_afresh_still_holds_what_requests_in_flight_reserved(tmp_path):
    # Redis restarted empty, then Redis away: both times the budget is counted again from
    # the usage rows, which do not hold the requests still running here.
    redis = RedisServer(tmp_path)

    async def no_rows(key_id, since):
        return 0

    async def scenario():
        limiter = SharedKeyLimiter(RedisCounters(redis.url, prefix="afresh:"), no_rows,
                                   clock=Clock())
        await limiter.start()
        key = Key(id="afresh", budget_tokens=100)
        running = await limiter.admit(key, reserve=60)
        import redis as redis_client

        redis_client.Redis.from_url(redis.url).flushall()  # restarted empty
        with pytest.raises(PermissionDeniedError) as after_restart:
            await limiter.admit(key, reserve=60)
        small = await limiter.admit(key, reserve=40)  # what is left fits
        redis.stop()  # away: counted in this process
        with pytest.raises(PermissionDeniedError) as in_outage:
            await limiter.admit(key, reserve=10)
        await running.settle(50)
        await small.settle(40)
        await limiter.close()
        return after_restart.value, in_outage.value

    try:
        after_restart, in_outage = run(scenario())
    finally:
        redis.stop()
    assert "has 40 left" in after_restart.message  # the 60 in flight still count
    assert "spent: 100 used" in in_outage.message, in_outage.message
