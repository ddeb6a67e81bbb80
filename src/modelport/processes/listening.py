"""Whether a process listens on a TCP port, read from Linux's /proc.

The primary asks it of its followers before it calls itself ready: a follower's socket is
bound (SO_REUSEPORT) long before its app has started and it listens, and until it does the
kernel gives every new connection to the processes already listening; kept alive, those
connections stay there for good. Where there is no /proc to read, nothing can be known
and every process counts as listening.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")
_LISTEN = "0A"  # the TCP state column of /proc/net/tcp


def listens(pid: int, port: int, proc: Path = _PROC) -> bool:
    """True when `pid` holds a socket listening on `port` (IPv4 or IPv6)."""
    if not (proc / "net").is_dir():
        return True
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return False
    try:
        fds = os.listdir(proc / str(pid) / "fd")
    except OSError:
        return False  # gone, or not ours to look at
    for fd in fds:
        try:
            target = os.readlink(proc / str(pid) / "fd" / fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def _listening_inodes(port: int, proc: Path) -> set[str]:
    wanted = f":{port:04X}"
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and fields[1].endswith(wanted):
                inodes.add(fields[9])
    return inodes
