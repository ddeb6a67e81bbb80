"""What every config section is built on: strict models and keys that never print."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MaskedKey(str):
    """An upstream key: sent and compared as the string it is, shown as *** in every repr
    (so a config or model printed into a log or an error never carries it)."""

    def __repr__(self) -> str:
        return "'***'"
