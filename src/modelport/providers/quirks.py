"""A vendor's parameter quirks applied to an OpenAI request body, and its in-body errors.

Pure functions over dicts: what the vendors file says a vendor renames, rejects, caps
or clamps, done once per request only for vendors that have quirks at all.
"""

from __future__ import annotations

from typing import Any

from modelport.config import VendorSpec
from modelport.errors import UpstreamError


def has_body_quirks(spec: VendorSpec) -> bool:
    return bool(spec.rename or spec.drop or spec.ranges or spec.max_tokens_limit
                or spec.default_max_tokens)


def apply_quirks(spec: VendorSpec, body: dict[str, Any]) -> dict[str, Any]:
    """The body the vendor accepts (a new dict; the caller's is left alone)."""
    body = dict(body)
    for field in spec.drop:
        body.pop(field, None)
    for ours, theirs in spec.rename.items():
        if ours in body:
            # The newer field wins when a client sends both (max_completion_tokens).
            body[theirs] = body.pop(ours)
    for field, (low, high) in spec.ranges.items():
        value = body.get(field)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            body[field] = min(high, max(low, value))
    for field in ("max_tokens", "max_completion_tokens"):
        value = body.get(field)
        if spec.max_tokens_limit and isinstance(value, int) and value > spec.max_tokens_limit:
            body[field] = spec.max_tokens_limit
    if spec.default_max_tokens and "max_tokens" not in body \
            and "max_completion_tokens" not in body:
        body["max_tokens"] = spec.default_max_tokens
    return body


def _dig(data: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def body_error(spec: VendorSpec, payload: Any, label: str) -> UpstreamError | None:
    """The failure a vendor reported inside a 200 answer (MiniMax base_resp, Spark code)."""
    if spec.error_code_field is None or not isinstance(payload, dict):
        return None
    code = _dig(payload, spec.error_code_field)
    if code in (None, 0, "0", ""):
        return None
    message = _dig(payload, spec.error_message_field) if spec.error_message_field else None
    return UpstreamError(f"{label}: upstream reported error {code}: {message or 'no message'}",
                         status=502, code=str(code))
