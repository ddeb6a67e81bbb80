"""Which process listens on a TCP port, read from /proc (Linux; elsewhere nothing is known).

Used when a port is taken, to tell "a modelport server is already serving here" apart from
some other program: only processes of the same user can be seen, which is the case that
matters (a user's own server started earlier). And by the primary gateway process before
it calls itself ready: a follower's socket is bound (SO_REUSEPORT) long before its app
listens, and until it does the kernel gives every new connection to the processes already
listening; kept alive, those connections stay there for good.
"""

from __future__ import annotations

import os
from pathlib import Path

_LISTEN = "0A"
_PROC = Path("/proc")


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and \
                    int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    return inodes


def listens(pid: int, port: int) -> bool:
    """Whether `pid` holds a socket listening on `port` (IPv4 or IPv6); where there is no
    /proc to read nothing can be known, and it counts as listening."""
    if not (_PROC / "net").is_dir():
        return True
    sockets = _listening_inodes(port)
    if not sockets:
        return False
    try:
        return bool(_socket_links(_PROC / str(pid)) & sockets)
    except OSError:
        return False  # gone, or not ours to look at


def _socket_links(process: Path) -> set[str]:
    links = set()
    for fd in (process / "fd").iterdir():
        try:
            links.add(os.readlink(fd))
        except OSError:
            continue  # closed meanwhile
    return links


def listener_pids(port: int) -> set[int]:
    """The processes (of this user) holding a listening socket on `port`."""
    sockets = _listening_inodes(port)
    pids: set[int] = set()
    if not sockets:
        return pids
    for process in _PROC.iterdir():
        if not process.name.isdigit():
            continue
        try:
            links = _socket_links(process)
        except OSError:
            continue  # another user's, or gone
        if links & sockets:
            pids.add(int(process.name))
    return pids


def command_line(pid: int) -> list[str]:
    try:
        return (_PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def parent_pid(pid: int) -> int | None:
    try:
        # The command name (field 2) may hold spaces and parentheses: split after its end.
        stat = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(stat[1])


def modelport_server_on(port: int) -> int | None:
    """The pid of the `modelport serve` listening on `port` (the first gateway process when
    several share it), or None when it is free or held by something else."""
    servers = {pid for pid in listener_pids(port) if _is_serve(command_line(pid))}
    primaries = [pid for pid in servers if parent_pid(pid) not in servers]
    return min(primaries or servers) if servers else None


def descends_from(pid: int, ancestor: int) -> bool:
    seen = 0
    while pid and seen < 64:  # a bound, in case /proc changes under us
        if pid == ancestor:
            return True
        pid, seen = parent_pid(pid) or 0, seen + 1
    return False


def _is_serve(argv: list[str]) -> bool:
    return "serve" in argv and any(part.endswith("modelport") or part == "modelport"
                                   for part in argv[:3])
