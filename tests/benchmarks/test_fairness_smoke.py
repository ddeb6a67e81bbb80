"""benchmarks/fairness.py runs end to end with tiny counts and writes its JSON result (the
numbers are measured by running it for real, see benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
pytestmark = pytest.mark.e2e


def test_fairness_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "fairness.py"), "--flood", "4", "--probes", "2",
         "--a-tokens", "4", "--seconds", "3", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    path = Path(re.search(r"written: (\S+\.json)", result.stdout).group(1))
    data = json.loads(path.read_text())
    path.unlink()
    noisy = data["results"]["with fair share"]["noisy"]
    assert noisy["a_failures"] == 0 and noisy["b_failed"] == []
    assert set(data["results"]["with fair share"]["fair"]["tokens_by_key"]) == {
        "16", "32", "64", "128"}
    assert data["hot_path_us"] > 0
