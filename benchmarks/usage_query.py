#!/usr/bin/env python
"""Usage accounting on the embedded database: write 100,000 rows, then time the summaries.

Rows go in through the UsageRecorder as the gateway writes them (record, then batched
writes; here a flush every 5,000 rows), spread over --keys keys, --models models and
--days days. Then each grouping (key, model, day) is timed --repeat times through the
store, and `GET /admin/usage` grouped by key through the real admin app over ASGI
(in-process: the HTTP stack is Starlette's, without a socket). Target: /admin/usage by
key under 200 ms at 100,000 rows.

    python benchmarks/usage_query.py [--rows 100000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, summarize_ms, write_result  # noqa: E402

from modelport.store import UsageRow  # noqa: E402

MASTER = "bench-master-key"


def _config(folder: str, models: int) -> dict:
    return {"server": {"master_key": MASTER, "data_dir": folder}, "models": [
        {"name": f"model-{i}", "engine": "openai", "base_url": "http://127.0.0.1:9/v1",
         "price": {"input": 0.5, "output": 1.5}} for i in range(models)]}


async def _fill(state, rows: int, keys: list[str], models: int, days: int) -> float:
    rng = random.Random(7)
    now = time.time()
    started = time.perf_counter()
    for i in range(rows):
        state.usage.record(UsageRow(
            model=f"model-{rng.randrange(models)}", endpoint="/v1/chat/completions",
            status=200 if rng.random() > 0.02 else 429,
            key_id=rng.choice(keys) if rng.random() > 0.1 else None,
            deployment="http://127.0.0.1:9/v1", prompt_tokens=rng.randrange(10, 2000),
            completion_tokens=rng.randrange(1, 500), latency_ms=rng.uniform(50, 3000),
            ttft_ms=rng.uniform(10, 300), streamed=rng.random() > 0.5,
            at=now - rng.uniform(0, days * 86400)))
        if i % 5000 == 4999:
            # Rows are made here far faster than requests arrive; waiting for the batch
            # keeps the bounded buffer from dropping any.
            await state.usage.flush()
    await state.usage.flush()
    assert state.usage.dropped == 0
    return time.perf_counter() - started


async def _time(call, repeat: int) -> list[float]:  # noqa: ANN001
    await call()  # warm-up: first query plans, page cache
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def main(args: argparse.Namespace) -> None:
    import httpx

    from modelport.api.app import build_app
    from modelport.config import parse_config
    from modelport.gateway.build import build_state

    folder = tempfile.mkdtemp(prefix="modelport-usage-bench-")
    state = build_state(parse_config(_config(folder, args.models)))
    app = build_app(state)
    await state.store.start()
    try:
        keys = [(await state.keys.create(f"team-{i}")).key.id for i in range(args.keys)]
        fill_s = await _fill(state, args.rows, keys, args.models, args.days)
        results, rows = {}, []
        for group_by in ("key", "model", "day"):
            samples = await _time(lambda g=group_by: state.usage.summary(g), args.repeat)
            results[f"summary_{group_by}"] = summarize_ms(samples)
            rows.append([f"store summary by {group_by}", *results[f"summary_{group_by}"].values()])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw",
                                     headers={"Authorization": f"Bearer {MASTER}"}) as client:
            async def by_key() -> None:
                response = await client.get("/admin/usage", params={"group_by": "key"})
                assert response.status_code == 200 and len(response.json()["data"]) == args.keys + 1

            samples = await _time(by_key, args.repeat)
            results["admin_usage_key"] = summarize_ms(samples)
            rows.append(["GET /admin/usage?group_by=key", *results["admin_usage_key"].values()])
            since = await _time(lambda: client.get("/admin/usage", params={
                "group_by": "key", "since": "1d"}), args.repeat)
            results["admin_usage_key_1d"] = summarize_ms(since)
            rows.append(["GET /admin/usage?group_by=key&since=1d",
                         *results["admin_usage_key_1d"].values()])
    finally:
        await state.store.stop()
    db_mib = (Path(folder) / "modelport.db").stat().st_size / 2**20
    print(f"{args.rows:,} rows written through the recorder in {fill_s:.2f} s "
          f"({args.rows / fill_s:,.0f} rows/s); database {db_mib:.1f} MiB")
    print_table(f"usage queries over {args.rows:,} rows ({args.keys} keys, {args.models} models, "
                f"{args.days} days), ms", ["query", "p50", "p99", "mean"], rows)
    path = write_result("usage_query", {
        "rows": args.rows, "keys": args.keys, "models": args.models, "days": args.days,
        "fill_s": round(fill_s, 2), "database_mib": round(db_mib, 1), "results": results})
    print(f"written: {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
