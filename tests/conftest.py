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
# One thread per model process: tests run several at once (a gateway's workers, torch in
# this process) on machines as small as 2 cores, often busy with other work, where two
# processes each running a thread per core made one setup take 297 s. torch
# reads OMP_NUM_THREADS when it loads (here and in every worker, which inherit it); workers
# size llama.cpp and their splits from MODELPORT_CPUS. Set either to measure with more.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MODELPORT_CPUS", "1")
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
