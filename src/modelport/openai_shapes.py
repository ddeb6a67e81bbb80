"""Every OpenAI response shape modelport writes: chat completions and their chunks, text
completions, embeddings (floats or base64) and the /v1/models card, for the workers and
for the providers that translate from another API."""

from __future__ import annotations

import base64
import struct
import time
import uuid
from typing import Any

from modelport.sse import DONE, sse_event


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage_dict(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def chat_message(content: str | None, tool_calls: list[dict[str, Any]] | None = None, *,
                 role: str = "assistant", refusal: str | None = None,
                 reasoning: str | None = None) -> dict[str, Any]:
    """An answer's message; `content` as given (null beside tool calls is the caller's rule)."""
    message: dict[str, Any] = {"role": role, "content": content, "refusal": refusal}
    if reasoning:
        message["reasoning_content"] = reasoning
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


class ResponseShape:
    """The id/object/created/model head shared by an answer and all its chunks
    (`chat.completion` or `text_completion`)."""

    def __init__(self, id_prefix: str, object_name: str, model: str):
        self.id = f"{id_prefix}-{uuid.uuid4().hex}"
        self.object = object_name
        self.created = int(time.time())
        self.model = model

    def body(self, **fields: Any) -> dict[str, Any]:
        return {"id": self.id, "object": self.object, "created": self.created,
                "model": self.model, "system_fingerprint": None, **fields}

    def chunk(self, choices: list[dict[str, Any]], include_usage: bool, usage: Any = None) -> bytes:
        payload = self.body(choices=choices)
        if self.object == "chat.completion":
            payload["object"] = "chat.completion.chunk"
        if include_usage:
            payload["usage"] = usage  # OpenAI sends null on every chunk but the last
        return sse_event(payload)


def model_card(id: str, created: int = 0, **extra: Any) -> dict[str, Any]:
    """One entry of GET /v1/models; `extra` carries modelport's own fields (status...)."""
    return {"id": id, "object": "model", "created": created, "owned_by": "modelport", **extra}


def model_list(cards: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": cards}


def chat_completion(
    *, id: str, model: str, text: str | None, finish_reason: str | None,
    usage: dict[str, int] | None, tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    answer: dict[str, Any] = {
        "id": id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason,
                     "logprobs": None}],
    }
    if usage is not None:
        answer["usage"] = usage
    return answer


class ChunkWriter:
    """Encodes one stream's chunks: same id, model and creation time on every event."""

    __slots__ = ("id", "model", "created")

    def __init__(self, model: str, id: str | None = None) -> None:
        self.id = id or completion_id()
        self.model = model
        self.created = int(time.time())

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        # Every field OpenAI's chunks carry, with its type: clients index them directly.
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish_reason}]}

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        # The shape OpenAI sends for stream_options.include_usage: no choices, only usage.
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": None, "choices": [], "usage": usage}

    @staticmethod
    def event(chunk: dict[str, Any]) -> bytes:
        return sse_event(chunk)

    done = DONE


def embeddings_response(model: str, vectors: Any, encoding_format: str,
                        usage: dict[str, int] | None = None) -> dict[str, Any]:
    """`vectors`: lists of floats, or a numpy array (one row per input) as engines give."""
    def encode(vector: Any) -> list[float] | str:
        numeric = hasattr(vector, "astype")  # a numpy row: its bytes, without a Python list
        if encoding_format == "base64":
            packed = (vector.astype("<f4").tobytes() if numeric
                      else struct.pack(f"<{len(vector)}f", *vector))
            return base64.b64encode(packed).decode("ascii")
        return vector.tolist() if numeric else vector

    return {
        "object": "list", "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)}
                 for i, v in enumerate(vectors)],
        "usage": usage or {"prompt_tokens": 0, "total_tokens": 0},
    }
