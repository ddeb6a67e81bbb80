"""`modelport models` shows what each loaded model holds per device and, under the table,
each device's memory against its budget (from /health)."""

from __future__ import annotations

from rich.console import Console

from modelport.cli.tables import models_table

CARDS = [{"id": name, "kind": "chat", "engine": "llamacpp", "load": "on_demand"}
         for name in ("small", "big", "away")]
STATES = {
    "small": {"status": "ready", "memory": {"resident": True, "bytes": {"cpu": 150 * 2**20}}},
    "big": {"status": "ready", "memory": {"resident": True, "bytes": {"cuda:0": 3 * 2**30}}},
    "away": {"status": "unloaded", "memory": {"resident": False, "bytes": {"cpu": 2**30}}},
}
DEVICES = {"cpu": {"budget_bytes": 2**30, "used_bytes": 150 * 2**20, "models": ["small"]},
           "cuda:0": {"budget_bytes": None, "used_bytes": 3 * 2**30, "models": ["big"]}}


def render(table) -> str:  # noqa: ANN001
    console = Console(width=100, record=True)
    console.print(table)
    return console.export_text()


def test_each_loaded_model_shows_its_memory_and_each_device_its_budget():
    text = render(models_table("http://gw", CARDS, STATES, DEVICES))
    assert "holds 150.0 MiB on cpu" in text and "holds 3.0 GiB on cuda:0" in text
    assert "1.0 GiB on cpu" not in text  # an unloaded model holds nothing
    assert "cpu: 150.0 MiB held of 1.0 GiB (memory_budget) by small" in text
    assert "cuda:0: 3.0 GiB held (no budget) by big" in text


def test_without_memory_figures_the_table_is_as_before():
    text = render(models_table("http://gw", CARDS, {}, None))
    assert "held" not in text and "holds" not in text
