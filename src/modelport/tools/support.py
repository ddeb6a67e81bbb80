"""Whether a local model can call tools: its chat template must show the model the tools
and render earlier tool calls, or a request with `tools` would be answered as if it had
none. The answer (and the tool-call format the template teaches) is worked out once at
start-up by rendering a probe conversation with the template; `modelport check` shows it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.chat_templates import BUILTIN_TEMPLATES, template_text
from modelport.config import ModelConfig, OpenAIUpstreamModel
from modelport.errors import ConfigError
from modelport.config.locations import resolve_location

HERMES = "hermes"  # <tool_call>{"name": ..., "arguments": ...}</tool_call>
JSON = "json"      # a bare {"name": ..., "parameters": ...} object (Llama 3)

_PROBE_TOOL = "probe_lookup_tool"
_PROBE_CALL = "probe_called_tool"
_FIX = ("set `chat_template: chatml-tools` (or another template that renders tools: "
        f"built-ins {', '.join(BUILTIN_TEMPLATES)}, a file path, or Jinja text) on the model")


@dataclass(frozen=True)
class ToolSupport:
    format: str | None  # HERMES, JSON, "engine" (the engine decides), or None: no tools
    reason: str         # why not, or how; shown by `modelport check` and in the 400

    @property
    def can_call_tools(self) -> bool:
        return self.format is not None


ENGINE_DECIDES = ToolSupport("engine", "the upstream or engine decides")


def tool_support(model: ModelConfig, models_dir: Path) -> ToolSupport:
    if isinstance(model, OpenAIUpstreamModel) or model.engine not in (
            "llamacpp", "transformers", "auto"):
        return ENGINE_DECIDES  # online APIs, plugins and vLLM answer for themselves
    configured = getattr(model, "chat_template", None) or _auto_option(model, "chat_template")
    try:
        template = template_text(configured) if configured else _own_template(model, models_dir)
    except (OSError, ValueError, ConfigError) as error:
        return ToolSupport(None, f"its chat template could not be read ({error})")
    where = "the configured chat_template" if configured else "the model's own chat template"
    if template is None:
        return ToolSupport(None, f"it has no chat template of its own; {_FIX}")
    return analyse_template(template, where)


def analyse_template(template: str, where: str = "the chat template") -> ToolSupport:
    if "{" not in template:
        return ToolSupport(None, f"{where} is a name ({template!r}), not a Jinja template that "
                                 f"renders tools; {_FIX}")
    try:
        with_tools = _render(template, tools=True)
    except Exception as error:  # jinja2 raises many unrelated types
        return ToolSupport(None, f"{where} fails on a conversation with tools "
                                 f"({type(error).__name__}: {error}); {_FIX}")
    if _PROBE_TOOL not in with_tools:
        return ToolSupport(None, f"{where} does not show the model the `tools`; {_FIX}")
    if _PROBE_CALL not in with_tools:
        return ToolSupport(None, f"{where} does not render an assistant's `tool_calls`; {_FIX}")
    if "<tool_call>" in with_tools:
        return ToolSupport(HERMES, f"{where} renders tools (<tool_call> JSON format)")
    return ToolSupport(JSON, f"{where} renders tools (JSON format)")


def _render(template: str, tools: bool) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=["jinja2.ext.loopcontrols"])
    environment.filters["tojson"] = lambda value, indent=None, **_: json.dumps(
        value, ensure_ascii=False, indent=indent)
    environment.globals["raise_exception"] = raise_exception
    arguments = json.dumps({"query": "probe"})
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "probe question"},
        {"role": "assistant", "content": "", "tool_calls": [{
            "id": "call_probe", "type": "function",
            "function": {"name": _PROBE_CALL, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "call_probe", "content": "probe result"},
    ]
    tool_list = [{"type": "function", "function": {
        "name": _PROBE_TOOL, "description": "probe",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]
    return environment.from_string(template).render(
        messages=messages, tools=tool_list if tools else None, add_generation_prompt=True,
        bos_token="", eos_token="")


def _auto_option(model: ModelConfig, name: str) -> Any:
    options = getattr(model, "options", None)
    return options.get(name) if isinstance(options, dict) else None


def _own_template(model: ModelConfig, models_dir: Path) -> str | None:
    path = resolve_location(model.path, models_dir, model.name)  # type: ignore[attr-defined]
    if path.is_file() and path.suffix.lower() == ".gguf":
        from modelport.engines.gguf_metadata import read_string

        return read_string(path, "tokenizer.chat_template")
    if path.is_dir():
        return _checkpoint_template(path)
    return None


def _checkpoint_template(folder: Path) -> str | None:
    standalone = folder / "chat_template.jinja"
    if standalone.is_file():
        return standalone.read_text(encoding="utf-8")
    config_file = folder / "tokenizer_config.json"
    if config_file.is_file():
        template = json.loads(config_file.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, str):
            return template
        if isinstance(template, list):  # named templates: the default, else the tool one
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            return named.get("tool_use") or named.get("default")
    return None

