"""A request's place in its model's queue: its key (the flow fair share is counted by),
class, weight and expected tokens, taken from the virtual key and what the request asks.

A key's class and weight are its `priority` and `weight` (kept with the key's metadata); a
request may ask for a lower class with the `x-modelport-priority` header or
`metadata.priority` in its body, never a higher one than its key allows (`standard` for a
key without one). Requests without a virtual key (no auth, the master key, static keys)
get the class they ask for.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from modelport.errors import InvalidRequestError
from modelport.admission.fair_queue import Ticket
from modelport.admission.priority import DEFAULT, granted, parse_priority

logger = logging.getLogger("modelport.gateway")

PRIORITY_HEADER = "x-modelport-priority"
QUEUE_MS_HEADER = "x-modelport-queue-ms"
# The answer assumed for a request that sets no max_tokens (tokens; fair share is by
# expected cost, and most answers are far below the context).
EXPECTED_OUTPUT_TOKENS = 256
# Bytes of a JSON request body per prompt token, roughly, for the expected cost.
_BYTES_PER_TOKEN = 4


def ticket_for(headers: Mapping[str, str], key: Any, body: dict[str, Any],
               max_tokens: int | None) -> Ticket:
    allowed, weight, flow = None, 1.0, ""
    if key is not None:
        allowed, weight = key_scheduling(key)
        flow = key.id
    asked = asked_priority(headers, body)
    cost = len(orjson.dumps(body)) / _BYTES_PER_TOKEN + (max_tokens or EXPECTED_OUTPUT_TOKENS)
    return Ticket(flow, granted(asked, allowed), cost, weight)


def asked_priority(headers: Mapping[str, str], body: dict[str, Any]) -> int | None:
    value = headers.get(PRIORITY_HEADER)
    if value is not None:
        return parse_priority(value, PRIORITY_HEADER)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and "priority" in metadata:
        return parse_priority(metadata["priority"], "metadata.priority")
    return None


def key_scheduling(key: Any) -> tuple[int, float]:
    """A virtual key's class (`standard` unless set) and weight. The admin API checks both when they are set; a value written into
    the database by other means that does not parse is left out, with a log line."""
    metadata = key.metadata
    priority, weight = metadata.get("priority"), metadata.get("weight", 1.0)
    try:
        allowed = DEFAULT if priority is None else parse_priority(priority)
    except InvalidRequestError:
        logger.warning("key '%s': priority %r is not a class; using standard", key.name, priority)
        allowed = DEFAULT
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
        logger.warning("key '%s': weight %r is not a positive number; using 1", key.name, weight)
        weight = 1.0
    return allowed, float(weight)


def check_key_scheduling(metadata: Mapping[str, Any] | None) -> None:
    """What the admin API says of a key's `priority`/`weight` before it is stored."""
    if not metadata:
        return
    if "priority" in metadata:
        parse_priority(metadata["priority"], "metadata.priority")
    weight = metadata.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= 1000:
        raise InvalidRequestError(
            f"metadata.weight must be a number above 0 and at most 1000 (a key's share of "
            f"a model against keys of weight 1); got {weight!r}", param="metadata.weight")
