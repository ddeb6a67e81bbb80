"""Whether a host:port can be bound, asked before a server is started on it.

Both the gateway (before it starts) and a worker (before it loads its model) ask, so a
taken port is a clear start-up error naming the port instead of a server that dies
after minutes of loading, or a probe that reaches whatever else listens there.
"""

from __future__ import annotations

import errno
import ipaddress
import socket


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (not yet listening); OSError when it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn and llama.cpp do: a port left in TIME_WAIT by a stopped server is free.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def port_problem(host: str, port: int, owner: str) -> str | None:
    """Why `owner` (e.g. "model 'x'") cannot listen on host:port, or None if it can."""
    try:
        bind_socket(host, port).close()
    except OSError as error:
        return bind_error_message(host, port, owner, error)
    return None


def bind_error_message(host: str, port: int, owner: str, error: OSError) -> str:
    reason = ("is already in use" if error.errno == errno.EADDRINUSE
              else f"cannot be bound ({error.strerror or error})")
    return (f"{owner}: port {port} on {host} {reason}; stop the other server or choose "
            "another port")
