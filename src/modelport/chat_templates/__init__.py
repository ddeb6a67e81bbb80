"""Chat templates shipped with modelport, and turning a `chat_template` setting into Jinja text.

`chat_template` in the config is a built-in name (`chatml-tools`, `gemma-tools`), a file
path, or the template text itself. The built-ins render tools and tool calls in the
Hermes convention (`<tool_call>{"name": ..., "arguments": ...}</tool_call>`), so that a
model whose own template ignores tools can call them.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

BUILTIN_TEMPLATES = ("chatml-tools", "gemma-tools")


def builtin_template(name: str) -> str | None:
    if name not in BUILTIN_TEMPLATES:
        return None
    return files(__name__).joinpath(f"{name}.jinja").read_text(encoding="utf-8")


def template_text(setting: str | None) -> str | None:
    """The Jinja text a `chat_template` setting stands for; a name that is neither a
    built-in nor a file is returned as it is (template text, or a llama.cpp built-in
    name such as `chatml`)."""
    if not setting:
        return None
    builtin = builtin_template(setting)
    if builtin is not None:
        return builtin
    if "{" not in setting:
        path = Path(setting).expanduser()
        if path.is_file():
            return path.read_text(encoding="utf-8")
    return setting
