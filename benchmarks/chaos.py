#!/usr/bin/env python
"""Chaos: mixed load on one gateway while its Redis, its PostgreSQL, its model worker and
the gateway itself are killed, stopped and restarted on a schedule.

One gateway (virtual keys in PostgreSQL, limits in Redis) serves the real SmolLM2 model
on --replicas workers (2 by default: the SIGSTOPped one is the first; with 1 its requests
have nowhere else to go and get 503 at once, as documented).
CLIENTS threads send chat requests without pause, two thirds with a key whose limits
(rpm, tpm, max_parallel, a monthly budget) are set high enough never to refuse, one third
with a key whose total budget is small (it runs out during the run). Every CYCLE_S the
schedule below runs once (--cycle-s shortens it, and each fault with it); --minutes sets
the length of the run (15 by default).

Reported: 5xx answers by cause and by the fault they came during (target 0), the small
budget's overshoot (tokens in its usage rows beyond its budget; target 0), usage rows lost
(answers the clients received minus the rows stored; target: at most those of the last
100 ms before a kill -9), and for each fault the longest any request waited while it
lasted.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import print_table, write_result  # noqa: E402
from support.models import SMOLLM2  # noqa: E402
from support.postgres import PostgresServer  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402
from support.server import ModelportServer  # noqa: E402

MASTER = "mk-chaos-master-key-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
CLIENTS = 6
CYCLE_S = 90.0
SMALL_BUDGET = 1500
BODY = {"model": "smollm2", "max_tokens": 16,
        "messages": [{"role": "user", "content": "Name a colour."}]}
# (seconds into the cycle, fault, seconds it lasts)
SCHEDULE = [(5, "redis killed, restarted empty", 8), (20, "redis SIGSTOP", 6),
            (33, "postgresql stopped", 10), (50, "worker SIGSTOP", 6),
            (63, "gateway kill -9, restarted", 0)]


@dataclass
class Answer:
    key: str
    started: float
    ended: float
    status: int  # 0: no answer (the connection failed)
    code: str


class Chaos:
    def __init__(self, workdir: Path, replicas: int) -> None:
        self.workdir = workdir
        self.redis = RedisServer(workdir)
        self.postgres = PostgresServer().start()
        self.config = {"server": {"master_key": MASTER, "redis_url": self.redis.url,
                                  "database_url": self.postgres.create_database("chaos"),
                                  "data_dir": str(workdir)},
                       "models": [{"name": "smollm2", "engine": "llamacpp", "path": SMOLLM2,
                                   "context_length": 2048, "parallel": 8,
                                   "replicas": replicas, "threads": 1}]}
        self.gateway = ModelportServer(self.config, workdir).start()
        self.port = self.gateway.port
        self.starts = 1
        self.answers: list[Answer] = []
        self.faults: list[tuple[str, float, float]] = []  # (fault, began, ended)
        self.stop = threading.Event()

    def key(self, **limits) -> str:
        made = httpx.post(self.gateway.url + "/admin/keys", headers=ADMIN, timeout=30,
                          json={"name": "chaos", **limits})
        made.raise_for_status()
        return made.json()["key"], made.json()["id"]

    def client(self, keys: dict[str, str]) -> None:
        names = ["limited", "limited", "small-budget"]
        with httpx.Client(timeout=120) as http:
            while not self.stop.is_set():
                name = random.choice(names)
                started = time.monotonic()
                try:
                    response = http.post(self.gateway.base_url + "/chat/completions", json=BODY,
                                         headers={"Authorization": f"Bearer {keys[name]}"})
                    status = response.status_code
                    code = (response.json().get("error", {}).get("code") or "") \
                        if status != 200 else ""
                    if status == 503:  # as the SDKs do: wait as told (at most a second)
                        time.sleep(min(1.0, float(response.headers.get("retry-after", 1))))
                except httpx.HTTPError as error:
                    status, code = 0, type(error).__name__
                    time.sleep(0.2)  # the gateway is restarting
                self.answers.append(Answer(name, started, time.monotonic(), status, code))

    # --- faults ---------------------------------------------------------------------------

    def run_fault(self, fault: str, lasts: float) -> None:
        began = time.monotonic()
        if fault.startswith("redis killed"):
            self.redis.process.kill()
            self.redis.process.wait(10)
            time.sleep(lasts)
            self.redis = RedisServer(self.workdir, port=self.redis.port)
        elif fault == "redis SIGSTOP":
            os.kill(self.redis.process.pid, signal.SIGSTOP)
            time.sleep(lasts)
            os.kill(self.redis.process.pid, signal.SIGCONT)
        elif fault.startswith("postgresql"):
            self.postgres.halt()
            time.sleep(lasts)
            self.postgres.start_again()
        elif fault == "worker SIGSTOP":
            pid = self.worker_pid()
            os.kill(pid, signal.SIGSTOP)
            time.sleep(lasts)
            os.kill(pid, signal.SIGCONT)
        else:  # the gateway and its worker, at once, then a new start on the same port
            os.killpg(self.gateway.process.pid, signal.SIGKILL)
            self.gateway.process.wait(10)
            self.starts += 1
            logs = self.workdir / f"start-{self.starts}"  # each start keeps its own log
            logs.mkdir()
            self.gateway = ModelportServer(self.config, logs, port=self.port).start()
        self.faults.append((fault, began, time.monotonic()))

    def worker_pid(self) -> int:
        health = httpx.get(self.gateway.url + "/health", timeout=10).json()
        return health["models"]["smollm2"]["worker"]["pid"]  # the first replica's

    def close(self) -> None:
        self.gateway.stop()
        os.kill(self.redis.process.pid, signal.SIGCONT)
        self.redis.stop()
        self.postgres.stop()


def usage(chaos: Chaos) -> dict[str, dict]:
    rows = httpx.get(chaos.gateway.url + "/admin/usage?group_by=key", headers=ADMIN,
                     timeout=60).json()["data"]
    return {row["key"]: row for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--cycle-s", type=float, default=CYCLE_S,
                        help="length of one round of the schedule (its times scale with it)")
    args = parser.parse_args()
    scale = args.cycle_s / CYCLE_S
    chaos = Chaos(Path(tempfile.mkdtemp(prefix="modelport-chaos-")), args.replicas)
    try:
        limited, limited_id = chaos.key(rpm=1_000_000, tpm=100_000_000, max_parallel=64,
                                        budget_tokens=1_000_000_000, budget_period="month")
        small, small_id = chaos.key(budget_tokens=SMALL_BUDGET, budget_period="total")
        keys = {"limited": limited, "small-budget": small}
        threads = [threading.Thread(target=chaos.client, args=(keys,)) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        end = started + args.minutes * 60
        cycle = 0
        while time.monotonic() < end:
            for offset, fault, lasts in SCHEDULE:
                at = started + (cycle * CYCLE_S + offset) * scale
                if at >= end:
                    break
                time.sleep(max(0.0, at - time.monotonic()))
                print(f"{time.monotonic() - started:6.1f} s  {fault}", flush=True)
                chaos.run_fault(fault, lasts * scale)
            cycle += 1
            time.sleep(max(0.0, min(end, started + cycle * args.cycle_s) - time.monotonic()))
        chaos.stop.set()
        for thread in threads:
            thread.join(180)
        report(chaos, usage(chaos), {"limited": limited_id, "small-budget": small_id}, args)
    finally:
        chaos.close()


def fault_of(chaos: Chaos, answer: Answer) -> str:
    """The last fault begun before `answer` ended (its effects may outlast it), or
    'no fault' before the first."""
    begun = [fault for fault, began, _ in chaos.faults if began <= answer.ended]
    return begun[-1] if begun else "no fault"


def report(chaos: Chaos, stored: dict[str, dict], ids: dict[str, str], args) -> None:
    answers = chaos.answers
    server_errors = collections.Counter(f"{a.status} {a.code or '-'}" for a in answers
                                        if a.status >= 500)
    by_fault = collections.Counter(f"{a.status} {a.code or '-'} during {fault_of(chaos, a)}"
                                   for a in answers if a.status >= 500)
    no_answer = collections.Counter(a.code for a in answers if a.status == 0)
    received = collections.Counter(a.key for a in answers if a.status)
    lost = {name: received[name] - stored.get(key_id, {}).get("requests", 0)
            for name, key_id in ids.items()}
    small = stored.get(ids["small-budget"], {})
    spent = small.get("prompt_tokens", 0) + small.get("completion_tokens", 0)
    waits = []
    for fault, began, ended in chaos.faults:
        during = [a.ended - a.started for a in answers
                  if a.started < ended and a.ended > began and a.status]
        waits.append((fault, began, max(during, default=0.0)))
    longest: dict[str, float] = collections.defaultdict(float)
    for fault, _, wait in waits:
        longest[fault] = max(longest[fault], wait)
    print_table(f"chaos, {args.minutes:g} minutes, {len(chaos.faults)} faults", ["measure", "value"], [
        ["requests answered", sum(received.values())],
        ["5xx answers", sum(server_errors.values())],
        *[[f"  5xx: {cause}", count] for cause, count in by_fault.most_common()],
        ["no answer (connection failed: the gateway was killed)", sum(no_answer.values())],
        [f"small budget: spent / budget ({SMALL_BUDGET})", f"{spent} / {SMALL_BUDGET}"],
        ["small budget: overshoot", max(0, spent - SMALL_BUDGET)],
        *[[f"usage rows lost ({name})", value] for name, value in lost.items()],
        *[[f"longest wait during: {fault}", f"{wait:.2f} s"] for fault, wait in longest.items()],
    ])
    path = write_result("chaos", {
        "minutes": args.minutes, "answered": sum(received.values()),
        "server_errors": dict(server_errors), "server_errors_during": dict(by_fault),
        "replicas": args.replicas, "no_answer": dict(no_answer),
        "small_budget": {"budget": SMALL_BUDGET, "spent": spent}, "rows_lost": lost,
        "longest_wait_s": dict(longest), "faults": len(chaos.faults),
        "statuses": dict(collections.Counter(a.status for a in answers))})
    print(f"written: {path}")


if __name__ == "__main__":
    main()
