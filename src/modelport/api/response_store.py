"""The last Responses API answers, kept in memory for `previous_response_id` and
`GET /v1/responses/{id}`: bounded by count and by size, the least recently used go first."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

DEFAULT_RESPONSES = 1000
DEFAULT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class StoredResponse:
    response: dict[str, Any]
    # The conversation up to and including this response's output, as Responses items:
    # what a request continuing from it is answered after.
    items: list[dict[str, Any]]
    size: int


class ResponseStore:
    def __init__(self, max_responses: int = DEFAULT_RESPONSES,
                 max_bytes: int = DEFAULT_BYTES) -> None:
        self.max_responses = max_responses
        self.max_bytes = max_bytes
        self._kept: OrderedDict[str, StoredResponse] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._kept)

    def put(self, response: dict[str, Any], items: list[dict[str, Any]]) -> None:
        # The encoded size counts earlier turns again in each response of a chain (they are
        # shared in memory), so the bound errs on the side of keeping less.
        size = len(orjson.dumps(response)) + len(orjson.dumps(items))
        if size > self.max_bytes:
            return  # a single answer bigger than the whole store is not kept
        self.delete(response["id"])
        self._kept[response["id"]] = StoredResponse(response, items, size)
        self._bytes += size
        while len(self._kept) > self.max_responses or self._bytes > self.max_bytes:
            _, evicted = self._kept.popitem(last=False)
            self._bytes -= evicted.size

    def get(self, response_id: str) -> StoredResponse | None:
        stored = self._kept.get(response_id)
        if stored is not None:
            self._kept.move_to_end(response_id)
        return stored

    def delete(self, response_id: str) -> bool:
        stored = self._kept.pop(response_id, None)
        if stored is None:
            return False
        self._bytes -= stored.size
        return True
