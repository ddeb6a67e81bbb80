"""Process lifetime helpers shared by every worker and the supervisor."""

from __future__ import annotations

import ctypes
import signal
import sys
import time

_PR_SET_PDEATHSIG = 1


# How often the main thread looks whether a stop signal came.
_STOP_POLL_S = 0.05


def wait_for_stop_signal() -> None:
    """Block the main thread until SIGTERM or SIGINT. The handler only appends to a list:
    one that takes a lock (threading.Event.set) deadlocks when a second signal arrives
    while the first one's handler holds it, and the worker then lives on after its
    gateway died (seen once in a 15-minute chaos run: two SIGTERMs, a worker still
    holding its port 20 minutes later)."""
    stopped: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopped.append(signum))
    while not stopped:
        time.sleep(_STOP_POLL_S)


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM this child when its parent dies (Linux), so a killed
    gateway leaves no orphan workers holding ports and memory."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        return
