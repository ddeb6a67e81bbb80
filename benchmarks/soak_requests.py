"""Request shapes of the soak benchmark: valid bodies and the malformed ones a gateway meets.

Each malformed shape names the status a correct server answers with; the soak reports any
other answer. Bodies are bytes so that invalid JSON and invalid UTF-8 reach the server as is.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

CHAT_MODELS = ("smollm2-135m-instruct", "smollm2")
EMBEDDING_MODELS = ("all-minilm-l6-v2", "all-MiniLM-L6-v2")
CHAT, COMPLETIONS, EMBEDDINGS = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"

PROMPTS = [
    "Hello! What is your name?",
    "Name three colours.",
    "Write one sentence about the sea.",
    "What is two plus two?",
    "Describe a cat in a few words.",
    "Give me a short greeting in French.",
]
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Soak tests run for a long time.",
    "A gateway forwards requests to workers.",
    "Embeddings map text to vectors.",
    "Rain falls from clouds.",
]


def chat_body(rng: random.Random, max_tokens: int, **extra: object) -> dict:
    return {"model": rng.choice(CHAT_MODELS),
            "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
            "max_tokens": max_tokens, **extra}


def completion_body(rng: random.Random, max_tokens: int, **extra: object) -> dict:
    return {"model": rng.choice(CHAT_MODELS), "prompt": rng.choice(PROMPTS),
            "max_tokens": max_tokens, **extra}


def embedding_body(rng: random.Random, count: int) -> dict:
    texts = [rng.choice(TEXTS) for _ in range(count)]
    return {"model": rng.choice(EMBEDDING_MODELS), "input": texts[0] if count == 1 else texts}


@dataclass(frozen=True)
class Malformed:
    name: str
    path: str
    body: bytes
    expected: tuple[int, ...]  # the statuses a correct server may answer with


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


_USER = [{"role": "user", "content": "Hi"}]
_CHAT = {"model": "smollm2", "messages": _USER, "max_tokens": 8}
_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def malformed_shapes(max_body_bytes: int) -> list[Malformed]:
    chat = [
        ("invalid_json", b'{"model": "smollm2", "messages": [', 400),
        ("invalid_utf8", b'{"model": "smollm2", "messages": [{"role": "user", "content": "\xff\xfe"}]}', 400),
        ("empty_body", b"", 400),
        ("json_array", b"[1, 2, 3]", 400),
        ("json_null", b"null", 400),
        ("json_string", b'"hello"', 400),
        ("messages_string", _json({**_CHAT, "messages": "hello"}), 400),
        ("messages_empty", _json({**_CHAT, "messages": []}), 400),
        ("message_no_role", _json({**_CHAT, "messages": [{"content": "Hi"}]}), 400),
        ("message_bad_role", _json({**_CHAT, "messages": [{"role": "wizard", "content": "Hi"}]}), 400),
        ("content_number", _json({**_CHAT, "messages": [{"role": "user", "content": 42}]}), 400),
        ("max_tokens_string", _json({**_CHAT, "max_tokens": "many"}), 400),
        ("max_tokens_negative", _json({**_CHAT, "max_tokens": -5}), 400),
        ("max_tokens_overflow", _json({**_CHAT, "max_tokens": 2**64}), 400),
        ("temperature_string", _json({**_CHAT, "temperature": "hot"}), 400),
        ("stream_string", _json({**_CHAT, "stream": "yes"}), 400),
        ("stream_options_string", _json({**_CHAT, "stream": True, "stream_options": "usage"}), 400),
        ("model_number", _json({**_CHAT, "model": 123}), 400),
        ("model_missing", _json({"messages": _USER}), 400),
        ("messages_missing", _json({"model": "smollm2"}), 400),
        ("unknown_model", _json({**_CHAT, "model": "no-such-model"}), 404),
        ("embedding_model_on_chat", _json({**_CHAT, "model": "all-minilm-l6-v2"}), (400, 404)),
        ("deep_nesting_top", _nested(400).encode(), 400),
        ("deep_nesting_content",
         f'{{"model": "smollm2", "max_tokens": 8, "messages": [{{"role": "user", "content": {_nested(400)}}}]}}'
         .encode(), 400),
        ("deep_nesting_unknown_field",
         f'{{"model": "smollm2", "max_tokens": 8, "messages": [{{"role": "user", "content": "Hi"}}], '
         f'"extra": {_nested(400)}}}'.encode(), 400),
        ("content_part_no_text", _json({**_CHAT, "messages": [{"role": "user", "content": [{"type": "text"}]}]}), 400),
        ("content_part_empty", _json({**_CHAT, "messages": [{"role": "user", "content": [{}]}]}), 400),
        ("content_part_unknown_type",
         _json({**_CHAT, "messages": [{"role": "user", "content": [{"type": "hologram", "text": "Hi"}]}]}), 400),
        ("content_part_image_only",
         _json({**_CHAT, "messages": [{"role": "user", "content": [
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}), 400),
        ("tools_string", _json({**_CHAT, "tools": "get_weather"}), 400),
        ("tool_no_function", _json({**_CHAT, "tools": [{"type": "function"}]}), 400),
        ("tool_name_number", _json({**_CHAT, "tools": [{"type": "function", "function": {"name": 5}}]}), 400),
        ("tool_choice_unknown_tool",
         _json({**_CHAT, "tools": [_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}}), 400),
        ("tool_choice_without_tools", _json({**_CHAT, "tool_choice": {"type": "function"}}), 400),
        ("tool_message_no_id", _json({**_CHAT, "messages": [*_USER, {"role": "tool", "content": "sunny"}]}), 400),
        ("assistant_tool_calls_string",
         _json({**_CHAT, "messages": [*_USER, {"role": "assistant", "tool_calls": "call"}]}), 400),
    ]
    completions = [
        ("invalid_json", b'{"model": "smollm2", "prompt": ', 400),
        ("prompt_missing", _json({"model": "smollm2", "max_tokens": 8}), 400),
        ("prompt_object", _json({"model": "smollm2", "prompt": {"text": "Hi"}, "max_tokens": 8}), 400),
        ("prompt_nested_lists", _json({"model": "smollm2", "prompt": [[["Hi"]]], "max_tokens": 8}), 400),
        ("unknown_model", _json({"model": "no-such-model", "prompt": "Hi"}), 404),
    ]
    embeddings = [
        ("invalid_json", b'{"model": "all-minilm-l6-v2", "input": ["a", ', 400),
        ("input_missing", _json({"model": "all-minilm-l6-v2"}), 400),
        ("input_number", _json({"model": "all-minilm-l6-v2", "input": 42.5}), 400),
        ("input_empty_list", _json({"model": "all-minilm-l6-v2", "input": []}), 400),
        ("input_null_item", _json({"model": "all-minilm-l6-v2", "input": ["a", None]}), 400),
        ("input_nested_lists", _json({"model": "all-minilm-l6-v2", "input": [[["a"]]]}), 400),
        ("encoding_format_unknown",
         _json({"model": "all-minilm-l6-v2", "input": "a", "encoding_format": "hex"}), 400),
        ("unknown_model", _json({"model": "no-such-model", "input": "a"}), 404),
        ("chat_model_on_embeddings", _json({"model": "smollm2", "input": "a"}), (400, 404)),
    ]
    shapes = []
    for prefix, path, table in (("chat", CHAT, chat), ("completions", COMPLETIONS, completions),
                                ("embeddings", EMBEDDINGS, embeddings)):
        for name, body, status in table:
            expected = status if isinstance(status, tuple) else (status,)
            shapes.append(Malformed(f"{prefix}/{name}", path, body, expected))
    # One byte over the limit, as valid JSON, so only the size can be the reason to refuse it.
    head, tail = b'{"model": "smollm2", "messages": [{"role": "user", "content": "', b'"}]}'
    filler = b"a" * (max_body_bytes + 1 - len(head) - len(tail))
    shapes.append(Malformed("chat/oversized_body", CHAT, head + filler + tail, (413,)))
    return shapes
