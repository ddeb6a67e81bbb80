"""benchmarks/transformers_batching.py runs end to end with tiny counts (a real server with
the SmolLM2 checkpoint, the engine and generate() in-process) and writes its JSON result."""

from __future__ import annotations

import pytest

from benchmarks.test_benchmark_smoke import run
from fixtures.hf_checkpoint import smollm2_checkpoint  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.e2e


def test_transformers_batching_smoke(smollm2_checkpoint):  # noqa: F811
    data = run("transformers_batching.py", "--streams", "1,2", "--rounds", "1",
               "--max-tokens", "4", "--checkpoint", str(smollm2_checkpoint))
    assert set(data["rounds"]) == {f"{side} {level}" for side in
                                   ("modelport", "in-process", "engine") for level in (1, 2)}
    assert all(rate[0] > 0 for rate in data["rounds"].values())
