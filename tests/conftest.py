"""Shared test helpers: free ports, a real `modelport serve` subprocess, fake upstreams."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Gateways started by tests keep their keys and usage here, not in the user's data folder
# (removed when the test run ends).
if "MODELPORT_DATA_DIR" not in os.environ:
    _DATA_DIR = tempfile.mkdtemp(prefix="modelport-test-data-")
    os.environ["MODELPORT_DATA_DIR"] = _DATA_DIR
    atexit.register(shutil.rmtree, _DATA_DIR, ignore_errors=True)

from support.databases import database_url, postgres  # noqa: E402,F401  (shared fixtures)
from support.redis_server import redis_server  # noqa: E402,F401


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
