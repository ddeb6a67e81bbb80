"""workers.listeners: whether a process listens on a port, from /proc (the primary's
readiness waits for its followers with it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from modelport.workers import listeners
from modelport.workers.listeners import listens
from support.server import free_port


def test_a_bound_socket_is_not_listening_until_listen_is_called():
    port = free_port()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        assert not listens(os.getpid(), port)
        sock.listen()
        assert listens(os.getpid(), port)
        assert not listens(os.getpid(), free_port())


def test_an_ipv6_listener_counts():
    port = free_port()
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", port))
        sock.listen()
        assert listens(os.getpid(), port)


def test_a_listener_counts_only_for_the_process_that_holds_it():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            assert listens(os.getpid(), port)
            assert not listens(other.pid, port)
        finally:
            other.kill()
            other.wait()
        assert not listens(other.pid, port)  # gone


def test_without_proc_every_process_counts_as_listening(tmp_path, monkeypatch):
    monkeypatch.setattr(listeners, "_PROC", tmp_path)  # a system with no /proc/net
    assert listens(os.getpid(), free_port())
