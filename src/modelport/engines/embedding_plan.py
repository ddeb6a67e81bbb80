"""Whether the embedding engine can serve a sentence-transformers folder on its own BERT
encoder (engines/bert_encoder.py: `tokenizers` + torch) or must load sentence-transformers,
decided from the folder's JSON files alone, so `modelport check` can say it without
loading anything.

Importing sentence-transformers costs ~3.5 s and transformers' BERT ~2.3 s on 2 idle cores,
against ~1 s for torch itself: the embedding worker decided the start-up time of the
default models. The own encoder serves what most embedding models are (all-MiniLM, bge,
m3e, text2vec): a BERT whose sentence-transformers modules are Transformer, Pooling (mean,
CLS or max) and optionally Normalize. Anything else loads sentence-transformers as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The modules a folder may list, by class name (sentence-transformers moved them between
# packages across versions; modules.json keeps whichever path wrote it).
_TRANSFORMER, _POOLING, _NORMALIZE = "Transformer", "Pooling", "Normalize"
# Pooling modes the encoder computes; any other mode switched on means sentence-transformers.
POOLING_MODES = ("mean", "cls", "max")
_LEGACY_POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                   "pooling_mode_max_tokens": "max"}
# Transformer-module settings, with the values that change nothing the encoder computes.
_HARMLESS_SETTINGS: dict[str, tuple[Any, ...]] = {
    "do_lower_case": (False,), "transformer_task": ("feature-extraction",),
    "module_output_name": (None, "token_embeddings"), "query_length": (None,),
    "document_length": (None,), "query_expansion": (None,)}
_BERT_FILES = ("config.json", "model.safetensors", "tokenizer.json")


@dataclass(frozen=True)
class EncoderPlan:
    """What the own encoder needs to know about a folder it can serve."""

    folder: Path  # the Transformer module's folder: config.json, weights, tokenizer
    pooling: str  # one of POOLING_MODES
    normalize: bool
    max_seq_length: int | None  # sentence_bert_config.json's, when it sets one
    prompt: str  # the default prompt that sentence-transformers' encode() prepends


@dataclass(frozen=True)
class EncoderChoice:
    plan: EncoderPlan | None  # None: sentence-transformers serves the model
    reason: str  # why it cannot be served natively (empty when it can)

    def describe(self, model_name: str) -> str:
        if self.plan is not None:
            return (f"model '{model_name}': embeddings by modelport's own BERT encoder "
                    f"({self.plan.pooling} pooling"
                    f"{', normalized' if self.plan.normalize else ''}; sentence-transformers "
                    "is not loaded)")
        return f"model '{model_name}': embeddings by sentence-transformers ({self.reason})"


def _not_native(reason: str) -> EncoderChoice:
    return EncoderChoice(None, reason)


def _read_json(path: Path) -> dict[str, Any] | list[Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _class_name(module: dict[str, Any]) -> str:
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def _pooling_mode(config: dict[str, Any]) -> str | None:
    """The one pooling mode the config switches on, if the encoder computes it: either
    sentence-transformers' `pooling_mode` or its older `pooling_mode_*` flags."""
    if config.get("include_prompt") is False:
        return None
    mode = config.get("pooling_mode")
    if mode is None:
        mode = [_LEGACY_POOLING.get(key, key) for key, value in config.items()
                if key.startswith("pooling_mode_") and value]
    modes = [mode] if isinstance(mode, str) else list(mode)
    return modes[0] if len(modes) == 1 and modes[0] in POOLING_MODES else None


def _transformer_problem(settings: dict[str, Any]) -> str | None:
    """Why the Transformer module's own settings (sentence_bert_config.json) are beyond the
    encoder, if they are: anything but a text feature extractor with a length limit."""
    for key, value in settings.items():
        if key in ("max_seq_length", "unpad_inputs") or \
                value in _HARMLESS_SETTINGS.get(key, ()) or \
                (key == "modality_config" and isinstance(value, dict) and set(value) <= {"text"}):
            continue
        return f"sentence_bert_config.json sets {key} {value!r}"
    return None


def _bert_problem(folder: Path) -> str | None:
    missing = [name for name in _BERT_FILES if not (folder / name).is_file()]
    if missing:
        return f"the transformer folder has no {', '.join(missing)}"
    config = _read_json(folder / "config.json")
    if not isinstance(config, dict) or config.get("model_type") != "bert":
        return "the transformer is not a BERT (model_type in config.json)"
    checks = {"hidden_act": ("gelu", config.get("hidden_act", "gelu")),
              "position_embedding_type": ("absolute",
                                          config.get("position_embedding_type", "absolute")),
              "dtype": ("float32", config.get("torch_dtype") or config.get("dtype") or "float32")}
    for name, (wanted, value) in checks.items():
        if value != wanted:
            return f"config.json sets {name} {value!r}, not {wanted!r}"
    if config.get("is_decoder"):
        return "config.json sets is_decoder"
    return None


def encoder_choice(path: Path) -> EncoderChoice:
    """Whether modelport's own encoder serves the folder `path`, from its JSON files."""
    modules = _read_json(path / "modules.json")
    if not isinstance(modules, list) or not modules or \
            not all(isinstance(module, dict) for module in modules):
        return _not_native("no modules.json (or not a list of modules)")
    names = [_class_name(module) for module in modules]
    if names not in ([_TRANSFORMER, _POOLING], [_TRANSFORMER, _POOLING, _NORMALIZE]):
        return _not_native(f"its modules are {', '.join(names)}; the own encoder serves "
                           "Transformer, Pooling and Normalize")
    folder = path / modules[0].get("path", "")
    problem = _bert_problem(folder)
    if problem:
        return _not_native(problem)
    pooling_config = _read_json(path / modules[1].get("path", "") / "config.json")
    pooling = _pooling_mode(pooling_config) if isinstance(pooling_config, dict) else None
    if pooling is None:
        return _not_native("its pooling is not one of mean, CLS or max over every token")
    settings = _read_json(folder / "sentence_bert_config.json") or {}
    if not isinstance(settings, dict):
        return _not_native("sentence_bert_config.json is not an object")
    problem = _transformer_problem(settings)
    if problem:
        return _not_native(problem)
    return EncoderChoice(EncoderPlan(folder, pooling, len(names) == 3,
                                     settings.get("max_seq_length"), _default_prompt(path)), "")


def _default_prompt(path: Path) -> str:
    """The prompt sentence-transformers' encode() prepends when the model names a default."""
    settings = _read_json(path / "config_sentence_transformers.json")
    if not isinstance(settings, dict):
        return ""
    prompts, default = settings.get("prompts"), settings.get("default_prompt_name")
    return prompts.get(default) or "" if isinstance(prompts, dict) and default else ""
