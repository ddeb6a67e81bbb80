"""Process lifetime helpers shared by every worker and the supervisor."""

from __future__ import annotations

import ctypes
import signal
import sys
import threading

_PR_SET_PDEATHSIG = 1


def wait_for_stop_signal() -> None:
    """Block the main thread until SIGTERM or SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(3600):
        pass


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
