"""Lines `serve` logs at start-up for a person starting the server by hand: where the
console is, and why /v1 may refuse them."""

from __future__ import annotations

import logging

from modelport.cli.client import connectable_host
from modelport.config.server import ServerConfig

LOCKED_BY_MASTER_KEY = (
    "a master key is set and no API keys are: /v1 accepts only the master key and virtual "
    "keys (`modelport keys create NAME`); clients without one get 401. Give the CLI a key "
    "with --api-key or MODELPORT_API_KEY")


def startup_notes(server: ServerConfig) -> list[tuple[int, str]]:
    """(logging level, line) pairs."""
    notes = [(logging.INFO, f"console: http://{connectable_host(server.host)}:{server.port}/ui/")]
    if server.master_key and not server.api_keys:
        notes.append((logging.WARNING, LOCKED_BY_MASTER_KEY))
    return notes
