"""A worker's main thread waits for a stop signal and returns once one came, however many
come at once (a dying gateway's SIGTERM and a supervisor's may arrive together)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

WAITER = ("from modelport.workers.lifetime import wait_for_stop_signal\n"
          "print('waiting', flush=True)\n"
          "wait_for_stop_signal()\n"
          "print('stopped', flush=True)\n")


def test_a_burst_of_stop_signals_ends_the_wait():
    for _ in range(5):
        process = subprocess.Popen([sys.executable, "-c", WAITER], stdout=subprocess.PIPE,
                                   text=True)
        try:
            assert process.stdout.readline() == "waiting\n"
            time.sleep(0.3)  # its handlers are set just after it says so
            for _ in range(200):
                os.kill(process.pid, signal.SIGTERM)
            started = time.monotonic()
            assert process.wait(timeout=5) == 0
            assert process.stdout.read() == "stopped\n"
            assert time.monotonic() - started < 2
        finally:
            process.kill()
            process.wait()
