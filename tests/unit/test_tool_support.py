"""Which chat templates can call tools, read from the config, GGUF metadata or a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from modelport.chat_templates import BUILTIN_TEMPLATES, builtin_template, template_text
from modelport.config import parse_config
from modelport.engines.gguf_metadata import read_string
from modelport.config.locations import resolve_location
from modelport.tools.support import HERMES, JSON, analyse_template, tool_support
from support.models import SMOLLM2

PLAIN_CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                "{% endif %}")
LLAMA3_STYLE = (
    "{% if tools %}Tools: {% for t in tools %}{{ t | tojson }}{% endfor %}\n{% endif %}"
    "{% for m in messages %}{% if m.tool_calls %}{% for c in m.tool_calls %}"
    '{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments }}}'
    "{% endfor %}{% else %}{{ m.role }}: {{ m.content }}\n{% endif %}{% endfor %}")


def model(**fields):
    entry = {"name": "m", "engine": "llamacpp", "path": SMOLLM2, **fields}
    return parse_config({"models": [entry]}, "test").models[0]


def test_builtin_templates_render_tools_in_the_hermes_format():
    for name in BUILTIN_TEMPLATES:
        assert analyse_template(builtin_template(name)).format == HERMES


def test_a_template_without_tools_cannot_and_says_how_to_fix_it():
    support = analyse_template(PLAIN_CHATML)
    assert not support.can_call_tools
    assert "does not show the model the `tools`" in support.reason
    assert "chat_template: chatml-tools" in support.reason


def test_a_bare_json_call_template_is_the_json_format():
    assert analyse_template(LLAMA3_STYLE).format == JSON


def test_the_default_gguf_model_needs_chatml_tools(tmp_path):
    assert not tool_support(model(), tmp_path).can_call_tools
    assert tool_support(model(chat_template="chatml-tools"), tmp_path).format == HERMES


def test_a_template_file_is_read(tmp_path):
    file = tmp_path / "tools.jinja"
    file.write_text(builtin_template("gemma-tools"))
    assert template_text(str(file)) == builtin_template("gemma-tools")
    assert tool_support(model(chat_template=str(file)), tmp_path).can_call_tools


def test_a_llamacpp_template_name_passes_through_and_cannot_be_judged(tmp_path):
    assert template_text("chatml") == "chatml"
    assert not tool_support(model(chat_template="chatml"), tmp_path).can_call_tools


def test_gguf_metadata_gives_the_models_own_template(tmp_path):
    path = resolve_location(SMOLLM2, tmp_path)
    template = read_string(Path(path), "tokenizer.chat_template")
    assert template.startswith("{% for message in messages %}")
    assert read_string(Path(path), "general.architecture") == "llama"
    assert read_string(Path(path), "no.such.key") is None


def test_checkpoint_templates_come_from_the_folder(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": LLAMA3_STYLE}))
    entry = parse_config({"models": [{"name": "hf", "engine": "transformers",
                                      "path": str(folder)}]}, "test").models[0]
    assert tool_support(entry, tmp_path).format == JSON
    (folder / "chat_template.jinja").write_text(PLAIN_CHATML)  # the standalone file wins
    assert not tool_support(entry, tmp_path).can_call_tools


def test_online_models_decide_for_themselves(tmp_path):
    entry = parse_config({"models": [{"name": "o", "engine": "openai",
                                      "base_url": "http://127.0.0.1:9/v1"}]}, "test").models[0]
    assert tool_support(entry, tmp_path).can_call_tools
