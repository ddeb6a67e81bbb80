"""What every model has, local or online: its names, load policy, price and replicas."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AliasChoices, Field, field_validator

from modelport.config.base import MaskedKey, _Strict

_MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"


class Price(_Strict):
    """A model's price per million tokens, in whatever currency the team counts in."""

    input: float = Field(ge=0, description="Per million prompt tokens.")
    output: float = Field(ge=0, description="Per million completion tokens.")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


class DeploymentEntry(_Strict):
    """A further place serving the same model: another machine's worker or any
    OpenAI-compatible server, as one more replica of the model."""

    url: str = Field(description="Its OpenAI base URL, e.g. http://10.0.0.5:8001/v1.")
    api_key: str | None = Field(
        None, description="Bearer key it expects, normally '${ENV_VAR}' (a remote worker's "
        "worker_key).",
    )
    weight: float = Field(1.0, ge=0, description="Its share of requests (strategy: weighted).")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError("must start with http:// or https://, e.g. http://10.0.0.5:8001/v1")
        url = url.rstrip("/")
        return url if url.endswith("/v1") else url + "/v1"

    @field_validator("api_key", mode="after")
    @classmethod
    def _masked(cls, key: str | None) -> "MaskedKey | None":
        return None if key is None else MaskedKey(key)

    @property
    def api_key_value(self) -> str | None:
        return None if self.api_key is None else str.__str__(self.api_key)


class _ModelBase(_Strict):
    name: str = Field(pattern=_MODEL_NAME_PATTERN, description="The `model` clients send.")
    aliases: list[str] = Field(default_factory=list, description="Other accepted names.")
    autostart: bool = Field(
        True, description="Older form of `load`: true is load: always; false (without "
        "`load`) serves the model only when named with `serve --model NAME`."
    )
    load: Literal["always", "on_demand"] | None = Field(
        None, description="always: the worker starts with the server; on_demand: the first "
        "request that names the model starts it (default: always, or not served when "
        "autostart is false).",
    )
    idle_unload_s: float | None = Field(
        None, gt=0, description="On-demand models: stop the worker after this many seconds "
        "without requests (default: server.idle_unload_s).",
    )
    load_timeout_s: float | None = Field(
        None, gt=0, description="How long a request waits for this on-demand model to load "
        "(default: server.load_timeout_s).",
    )
    max_queue: int = Field(
        64, ge=0, validation_alias=AliasChoices("max_queue", "queue_max"),
        description="Requests allowed to wait in the gateway's queue for this model beyond "
        "the running ones before 429 (also written queue_max).",
    )
    queue_timeout_s: float = Field(
        60.0, gt=0, description="How long a request waits in the model's queue for a free "
        "slot before it is answered 429 with Retry-After.",
    )
    reserved_slots: int = Field(
        0, ge=0, description="Running slots held back for requests of a class above standard "
        "and for keys below their fair share, so a person's request starts at once while a "
        "script fills the others (docs/scheduling.md).",
    )
    queue_aging_s: float = Field(
        30.0, ge=0, description="A queued request is served before those of the next class up "
        "that arrived this many seconds after it (0: strict priority).",
    )
    swap_max_wait_s: float | None = Field(
        None, ge=0, description="On-demand models: how long loading this model may wait for "
        "the models it would unload to serve their running and queued requests before they "
        "are unloaded anyway (default: server.swap_max_wait_s).",
    )
    pin: bool = Field(
        False, description="On-demand models: never unloaded to make room for another "
        "(server.max_loaded, server.memory_budget); idle_unload_s still applies.",
    )
    price: Price | None = Field(
        None, description="What a million tokens cost, for the cost column of usage.",
    )
    deployments: list[DeploymentEntry] = Field(
        default_factory=list, description="Further places serving this same model (other "
        "machines' workers, OpenAI-compatible servers), each one more replica of it.",
    )
    strategy: Literal["least_busy", "round_robin", "weighted", "prefix_affinity"] = Field(
        "least_busy", description="How a request picks among the model's replicas: fewest in "
        "flight for their capacity, in turn, by weight, or where its conversation's opening "
        "was served last (the engine's prompt cache answers it).",
    )
    affinity_margin: int = Field(
        2, ge=0, description="prefix_affinity: requests in flight a conversation's replica "
        "may have beyond the least busy one before the request goes elsewhere.",
    )
