"""A real PostgreSQL server for tests, from Debian's `postgresql` package.

PostgreSQL refuses to run as root, so the server runs as the `postgres` system user
(created by the package) in a temporary folder it owns, on a free loopback port, and is
stopped with pg_ctl (then by PID) at the end. Starting fails loudly: a test that needs
PostgreSQL must fail, not skip, where it cannot run.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from support.server import free_port

USER = "postgres"


def postgres_bin() -> Path:
    """The newest installed server's bin folder (/usr/lib/postgresql/NN/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not found:
        raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl); "
                           "run scripts/install.sh, which installs Debian's postgresql package")
    return Path(found[-1]).parent


class PostgresServer:
    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="modelport-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = [str(a) for a in args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n"
                               f"{result.stdout}\n{result.stderr}\n{self._log_tail()}")
        return result

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def start(self) -> "PostgresServer":
        if os.geteuid() == 0:
            owner = pwd.getpwnam(USER)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        os.chmod(self.root, 0o700)
        self._as_postgres(self.bin / "initdb", "-D", self.data, "-U", USER, "--auth=trust",
                          "-E", "UTF8", "--no-sync")
        return self.start_again()

    def start_again(self) -> "PostgresServer":
        """Start the server on its data (after `stop`), on the same port."""
        # Socket in our own folder (the system one, /var/run/postgresql, may not exist);
        # fsync off: test data need not survive a power cut.
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
                   "-c fsync=off -c full_page_writes=off")
        self._as_postgres(self.bin / "pg_ctl", "-D", self.data, "-l", self.log, "-o", options,
                          "-w", "-t", "60", "start")
        return self

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        self._as_postgres(self.bin / "createdb", "-h", "127.0.0.1", "-p", str(self.port),
                          "-U", USER, name)
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    @property
    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.root, ignore_errors=True)

    def halt(self) -> None:
        """Stop the server, keeping its data for `start_again`."""
        pid = self.pid
        try:
            self._as_postgres(self.bin / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop",
                              timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired):
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
