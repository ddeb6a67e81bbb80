"""Lines `serve` logs at start-up for a person starting the server by hand: where the
console is, why /v1 may refuse them, and where the keys of earlier versions went."""

from __future__ import annotations

import logging

from modelport.cli.client import connectable_host
from modelport.config import Config
from modelport.store.database import DATABASE_FILE, data_dir, database_file

LOCKED_BY_MASTER_KEY = (
    "a master key is set and no API keys are: /v1 accepts only the master key and virtual "
    "keys (`modelport keys create NAME`); clients without one get 401. Give the CLI a key "
    "with --api-key or MODELPORT_API_KEY")


def startup_notes(config: Config) -> list[tuple[int, str]]:
    """(logging level, line) pairs."""
    server = config.server
    notes = [(logging.INFO, f"console: http://{connectable_host(server.host)}:{server.port}/ui/")]
    if server.master_key and not server.api_keys:
        notes.append((logging.WARNING, LOCKED_BY_MASTER_KEY))
    earlier = _earlier_shared_database(config)
    if earlier:
        notes.append((logging.WARNING, earlier))
    return notes


def _earlier_shared_database(config: Config) -> str | None:
    """Earlier versions kept one database for every server of a user; a config that now
    gets its own (new, empty) one says where the old keys are, once, before it is made."""
    server = config.server
    if server.database_url or server.data_dir or config.source_file is None:
        return None
    folder = data_dir(config)
    own, shared = folder / database_file(config), folder / DATABASE_FILE
    if own.exists() or not shared.exists():
        return None
    return (f"keys and usage are now kept per config file, this one's in {own}; the "
            f"database earlier versions shared between servers is {shared}: set "
            f"server.database_url: sqlite:///{shared} to go on using its keys")
