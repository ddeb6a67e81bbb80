"""What the admin API accepts: key bodies and the times of usage queries."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelport.api.queueing import check_key_scheduling
from modelport.errors import InvalidRequestError

# Bounded by the database's integer columns (a larger number would fail in PostgreSQL).
Limit = Annotated[int, Field(ge=1, le=2**31 - 1, strict=True)]
Budget = Annotated[int, Field(ge=1, le=2**63 - 1, strict=True)]
# Every key lives in every gateway's memory and is read on each request's way through.
METADATA_LIMIT_BYTES = 4096
_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class _KeyFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] | None = Field(
        None, description="Models the key may use (names or aliases); null: every model.")
    rpm: Limit | None = Field(None, description="Requests per minute.")
    tpm: Limit | None = Field(None, description="Tokens per minute.")
    max_parallel: Limit | None = Field(None, description="Requests in flight at once.")
    budget_tokens: Budget | None = Field(None, description="Tokens per budget period.")
    expires_at: datetime | None = Field(
        None, description="ISO 8601 time (UTC when no offset is given) or epoch seconds.")
    metadata: dict[str, Any] | None = Field(None, description="Free-form labels.")

    @field_validator("models")
    @classmethod
    def _some_models(cls, models: list[str] | None) -> list[str] | None:
        if models is not None and not models:
            raise ValueError("an empty list allows no model; send null (or leave it out) "
                             "to allow every model")
        return models

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        if metadata is not None:
            size = len(orjson.dumps(metadata))
            if size > METADATA_LIMIT_BYTES:
                raise ValueError(f"is {size} bytes as JSON; at most {METADATA_LIMIT_BYTES} "
                                 "(labels, not documents)")
        check_key_scheduling(metadata)  # its priority and weight, read on every request
        return metadata

    @field_validator("expires_at")
    @classmethod
    def _future(cls, when: datetime | None) -> datetime | None:
        if when is None:
            return None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        if when <= datetime.now(UTC):
            raise ValueError(f"{when.isoformat()} is in the past; revoke a key to stop it now")
        return when


class KeyCreate(_KeyFields):
    name: str = Field(min_length=1, max_length=200)
    budget_period: Literal["day", "month", "total"] = "total"


class KeyPatch(_KeyFields):
    name: str = Field(None, min_length=1, max_length=200)  # type: ignore[assignment]
    budget_period: Literal["day", "month", "total"] = Field(None)  # type: ignore[assignment]

    @field_validator("name", "budget_period", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("cannot be null")
        return value


def parse_age(text: str) -> timedelta | None:
    """15m, 24h, 7d, 2w as a duration; None for anything else."""
    match = _RELATIVE.match(text.strip())
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))}) if match else None


def parse_time(text: str | None, name: str, now: datetime) -> datetime | None:
    """A query time: ISO 8601 (a date, or a time; UTC without an offset), epoch seconds,
    or an age such as 15m, 24h, 7d, 2w (that long before `now`)."""
    if text is None or text == "":
        return None
    age = parse_age(text)
    if age is not None:
        return now - age
    try:
        when = datetime.fromtimestamp(float(text), UTC)
    except (ValueError, OverflowError, OSError):
        try:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequestError(
                f"{name}: '{text}' is not a time; use ISO 8601 (2026-12-01 or "
                "2026-12-01T08:00:00Z), epoch seconds, or an age such as 24h or 7d",
                param=name) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
