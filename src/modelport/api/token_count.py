"""How many tokens a chat prompt is for the model that would serve it.

Exact where the engine can tell, from a local worker, which counts the very prompt its
chat path would read: llama.cpp serves `/apply-template` (the chat template rendered with
the messages and tools) and `/tokenize` (that text counted with the model's tokenizer);
vLLM, and the transformers worker in the same form, serve `/tokenize` taking the chat
messages themselves. Elsewhere (online APIs) the count is an estimate from the prompt's
length.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from modelport.errors import ModelportError, UpstreamError
from modelport.routing.deployments import Deployment, DeploymentStatus

# English text and JSON average about four characters per token across common tokenizers;
# each message also costs a few tokens of template (role markers, separators).
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


def estimate(chat_body: dict[str, Any]) -> int:
    characters = 0
    for message in chat_body["messages"]:
        content = message.get("content")
        characters += len(content if isinstance(content, str) else orjson.dumps(content or ""))
        characters += len(orjson.dumps(message.get("tool_calls"))) if message.get("tool_calls") else 0
    characters += len(orjson.dumps(chat_body["tools"])) if chat_body.get("tools") else 0
    return math.ceil(characters / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(chat_body["messages"])


def _prompt_fields(chat_body: dict[str, Any]) -> dict[str, Any]:
    return {key: chat_body[key] for key in ("messages", "tools", "tool_choice") if key in chat_body}


async def _exact(client: Any, deployment: Deployment, chat_body: dict[str, Any]) -> int | None:
    try:
        return await _llamacpp_count(client, chat_body)
    except UpstreamError as error:
        if error.upstream_status != 404:
            raise
    # Not llama.cpp: vLLM's /tokenize (and the transformers worker's) takes the messages.
    counted = orjson.loads((await client.post("/tokenize", orjson.dumps(
        {"model": deployment.upstream_model, **_prompt_fields(chat_body)}),
        from_root=True)).body)
    count = counted.get("count") if isinstance(counted, dict) else None
    return count if isinstance(count, int) else None


async def _llamacpp_count(client: Any, chat_body: dict[str, Any]) -> int | None:
    rendered = orjson.loads((await client.post("/apply-template", orjson.dumps(
        _prompt_fields(chat_body)), from_root=True)).body)
    if not isinstance(rendered, dict) or not isinstance(rendered.get("prompt"), str):
        return None
    # add_special as the chat path tokenizes its prompt (a BOS token where the model has one)
    tokens = orjson.loads((await client.post("/tokenize", orjson.dumps(
        {"content": rendered["prompt"], "add_special": True, "parse_special": True}),
        from_root=True)).body)
    if not isinstance(tokens, dict) or not isinstance(tokens.get("tokens"), list):
        return None
    return len(tokens["tokens"])


async def count_prompt_tokens(deployment: Deployment,
                              chat_body: dict[str, Any]) -> tuple[int, bool]:
    """(token count, whether it is exact) for `chat_body`'s messages and tools."""
    # Any ready replica tokenizes the same way (the first one may be restarting).
    ready = next((r for r in deployment.replicas if r.status is DeploymentStatus.READY), None)
    client = getattr(ready.provider, "client", None) if ready is not None else None
    if deployment.is_local and client is not None:
        try:
            count = await _exact(client, deployment, chat_body)
        except (ModelportError, orjson.JSONDecodeError):
            count = None  # not this engine's routes, or the worker is not up: estimate
        if count is not None:
            return count, True
    return estimate(chat_body), False
