"""What a request may spend, reserved against its key's token limits before it runs.

The prompt is not tokenized on the way through, so its bound is the size of the request
body in bytes: byte-level and byte-fallback tokenizers never make more tokens than bytes,
and the JSON around the text (field names, quotes, escapes) only adds. A chat template's
own tokens (role markers, a default system prompt) are allowed for on top. The answer may
add its max_tokens; without one, whatever the model's context leaves, or, where the
context is unknown (an online API), DEFAULT_OUTPUT_TOKENS. A local model never goes past
its context, so the whole is clipped to it.
"""

from __future__ import annotations

TEMPLATE_TOKENS = 64
DEFAULT_OUTPUT_TOKENS = 4096


def reservation(body_bytes: int, max_tokens: int | None, generates: bool,
                context: int | None) -> int:
    """The most tokens (prompt + completion) a request may be counted for."""
    prompt = body_bytes + TEMPLATE_TOKENS
    if not generates:
        return prompt
    if max_tokens is None:
        max_tokens = context if context is not None else DEFAULT_OUTPUT_TOKENS
    total = prompt + max_tokens
    return total if context is None else min(total, context)
