"""A local append-only journal of usage rows, so a gateway killed with -9 loses at most the
rows of its last FLUSH_S.

Usage rows reach the database in batches, a second or more apart; the rows waiting for
their batch lived only in memory. Now each row is also appended to a file beside the
database, written and fsync'd by a thread of its own every FLUSH_S (one fsync for all the
rows of that window, none on the request path). When a batch is committed, a mark says
so: rows up to it need no replay. At start, the journals of gateways that are gone (no
process holds their lock) are read back, and their rows after the last mark are written
to the database, except those it already holds (a crash between a commit and its mark).

One file per process (`<name>.<pid>-<random>.journal`, under an exclusive flock), so the processes
of one server, or servers sharing a folder, never write into one file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import threading
from collections import deque
from pathlib import Path

import orjson

logger = logging.getLogger("modelport.store")

FLUSH_S = 0.05  # rows are on disk within twice this (the window a kill -9 can lose)
ROTATE_BYTES = 16 * 1024 * 1024  # then the file is rewritten with the rows not yet committed
# The file is grown in zero-filled steps and written in place, so the sync every FLUSH_S
# is an fdatasync of data blocks: an append that grew the file made each sync commit the
# file system's journal too, which stalled the gateway's other writes (its log lines) and
# added 0.15-0.2 ms to a request at one client.
GROW_BYTES = 1024 * 1024
_MARK = b'{"committed":'


class UsageJournal:
    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self._name = name
        # Its own file even beside another store of this process (a test's second gateway).
        self.path = folder / f"{name}.{os.getpid()}-{secrets.token_hex(3)}.journal"
        self._lock = threading.Lock()
        self._pending: list[bytes] = []  # lines not yet written
        self._uncommitted: deque[tuple[int, bytes]] = deque()  # (row number, line)
        self._rows = 0  # rows appended so far
        self._committed = 0  # rows up to this one are in the database
        self._file = None
        self._offset = 0  # where the next lines go
        self._allocated = 0  # bytes of the file, written or zero-filled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> list[tuple]:
        """Take the rows left by journals whose gateways are gone, then start this one."""
        left = self._take_left_over()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w+b")  # noqa: SIM115 - held open until close
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._thread = threading.Thread(target=self._flush_forever, name="usage-journal",
                                        daemon=True)
        self._thread.start()
        return left

    def append(self, row: tuple) -> None:
        line = orjson.dumps(row) + b"\n"
        with self._lock:
            self._rows += 1
            self._pending.append(line)
            self._uncommitted.append((self._rows, line))

    @property
    def rows(self) -> int:
        return self._rows

    def committed(self, rows: int) -> None:
        """The first `rows` rows appended are in the database."""
        with self._lock:
            if rows <= self._committed:
                return
            self._committed = rows
            self._pending.append(_MARK + b"%d}\n" % rows)
            while self._uncommitted and self._uncommitted[0][0] <= rows:
                self._uncommitted.popleft()

    def close(self) -> None:
        """Write what is left; a journal whose rows are all committed is removed."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        assert self._file is not None
        self._flush()
        done = self._committed >= self._rows
        if done:
            self.path.unlink(missing_ok=True)
        self._file.close()
        self._file = None
        if not done:
            logger.warning("%d usage row(s) not in the database are kept in %s for the next "
                           "start", self._rows - self._committed, self.path)

    # --- the journal's thread ---------------------------------------------------------

    def _flush_forever(self) -> None:
        while not self._stop.wait(FLUSH_S):
            try:
                self._flush()
            except OSError as error:  # a full disk: rows still go to the database
                logger.error("could not write the usage journal %s: %s", self.path, error)

    def _flush(self) -> None:
        with self._lock:
            lines, self._pending = self._pending, []
        if not lines:
            return
        data = b"".join(lines)
        self._write_at_end(data)
        if self._offset > ROTATE_BYTES:
            self._rotate()

    def _write_at_end(self, data: bytes) -> None:
        file = self._file
        assert file is not None
        if self._offset + len(data) > self._allocated:
            grow = max(GROW_BYTES, len(data))
            file.seek(self._allocated)
            file.write(bytes(grow))
            file.flush()
            os.fsync(file.fileno())  # the new size, once per step
            self._allocated += grow
        file.seek(self._offset)
        file.write(data)
        file.flush()
        os.fdatasync(file.fileno())
        self._offset += len(data)

    def _rotate(self) -> None:
        """Start the file again with only the rows the database does not hold yet."""
        with self._lock:
            # Lines still pending are in `uncommitted` too: the new file holds them all.
            self._pending = []
            kept = b"".join(line for _, line in self._uncommitted)
            committed = self._committed
        fresh = self.path.with_suffix(".rotating")
        new = open(fresh, "w+b")  # noqa: SIM115
        fcntl.flock(new, fcntl.LOCK_EX | fcntl.LOCK_NB)
        old, self._file = self._file, new
        self._offset = self._allocated = 0
        self._write_at_end(_MARK + b"%d}\n" % committed + kept)
        os.replace(fresh, self.path)
        assert old is not None
        old.close()
        # Row numbers go on from where they were: the mark at the top keeps them apart.

    # --- start --------------------------------------------------------------------------

    def _take_left_over(self) -> list[tuple]:
        rows: list[tuple] = []
        for path in sorted(self.folder.glob(f"{self._name}.*.journal")):
            try:
                handle = open(path, "rb")  # noqa: SIM115
            except FileNotFoundError:
                continue
            with handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process's journal
                found = _uncommitted_rows(handle.read())
                rows.extend(found)
                path.unlink()
            if found:
                logger.warning("%d usage row(s) found in %s (a gateway that stopped without "
                               "writing them); writing them now", len(found), path.name)
        return rows


def _uncommitted_rows(data: bytes) -> list[tuple]:
    """The rows of a journal after its last mark (a torn last line is left out). A mark
    counts rows from the process's first; a rewritten file starts with one."""
    rows: list[tuple[int, tuple]] = []
    committed = number = 0
    for line in data.split(b"\n"):
        if line.startswith(b"\0"):
            break  # the zero-filled rest of the file: nothing was written there
        if not line:
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # the line being written when the process died
        if isinstance(value, dict):
            committed = max(committed, value["committed"])
            number = max(number, committed)
        else:
            number += 1
            rows.append((number, tuple(value)))
    return [row for n, row in rows if n > committed]
