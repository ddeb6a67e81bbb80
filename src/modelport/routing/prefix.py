"""The key a request's conversation prefix is known by, for prefix-affinity routing.

Turns of one conversation resend everything before them, so they share their opening:
the system prompt and the first user message (a completion prompt: its first characters).
Requests with the same opening are sent where it was last computed, so the engine's prefix
cache answers instead of encoding it again. Only the opening is hashed (bounded by
`PREFIX_CHARS`), so the key costs the same for a long conversation as for a short one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

PREFIX_CHARS = 2048


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: their text, in order
        return "".join(part.get("text", "") for part in content
                       if isinstance(part, Mapping) and isinstance(part.get("text", ""), str))
    return ""


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def chat_prefix(messages: Sequence[Any]) -> str | None:
    """The opening of a chat: every message up to and including the first user message."""
    opening: list[str] = []
    size = 0
    for message in messages:
        if not isinstance(message, Mapping):
            return None
        role = message.get("role")
        text = f"{role}\x00{_text(message.get('content'))}\x01"
        opening.append(text)
        size += len(text)
        if role == "user" or size >= PREFIX_CHARS:
            break
    if not opening:
        return None
    return _digest("".join(opening)[:PREFIX_CHARS])


def prompt_prefix(prompt: Any) -> str | None:
    """The opening of a completion prompt (the first of a list of prompts)."""
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt else None
    if not isinstance(prompt, str) or not prompt:
        return None
    return _digest(prompt[:PREFIX_CHARS])


def request_prefix(body: Mapping[str, Any]) -> str | None:
    """The prefix key of a chat or completion body; None when it has none."""
    if "messages" in body:
        messages = body["messages"]
        return chat_prefix(messages) if isinstance(messages, list) else None
    if "prompt" in body:
        return prompt_prefix(body["prompt"])
    return None
