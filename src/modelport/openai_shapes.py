"""OpenAI response shapes, built by providers that translate from something else."""

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


def embeddings_response(model: str, vectors: list[list[float]], encoding_format: str,
                        usage: dict[str, int] | None = None) -> dict[str, Any]:
    def encode(vector: list[float]) -> list[float] | str:
        if encoding_format == "base64":
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        return vector

    return {
        "object": "list", "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)}
                 for i, v in enumerate(vectors)],
        "usage": usage or {"prompt_tokens": 0, "total_tokens": 0},
    }
