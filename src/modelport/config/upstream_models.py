"""Models answered from inside the gateway: online APIs (vendors) and plugins."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic_core import InitErrorDetails
from pydantic import Field, ValidationError, field_validator, model_validator

from modelport.config.base import MaskedKey, _Strict
from modelport.config.model_base import _ModelBase


class RetrySettings(_Strict):
    """How one model's upstream is retried before the gateway gives up on it (or falls back).

    Only failures that happen before the first byte reaches the client are retried, so a
    streamed answer is never sent twice.
    """

    attempts: int = Field(
        2, ge=1, le=10,
        description="Tries per request, the first one included (1 turns retries off).",
    )
    backoff: float = Field(
        0.5, ge=0, description="Seconds before the first retry; doubled for each further one.",
    )
    max_backoff: float = Field(8.0, ge=0, description="Longest wait between two tries.")
    max_retry_after: float = Field(
        10.0, ge=0,
        description="Longest upstream Retry-After that is waited out; a longer one is "
        "answered (or falls back) at once.",
    )


class CooldownSettings(_Strict):
    """When a model that keeps failing is skipped instead of being hammered."""

    failures: int = Field(
        3, ge=1, description="Consecutive failed requests that put the model in cool-down.",
    )
    seconds: float = Field(
        30.0, ge=0, description="How long a cooled-down model is skipped (0: never).",
    )


class VendorSpec(_Strict):
    """One online API: where it is, how the key is sent, and what it accepts.

    The built-in vendors live in modelport/providers/vendors.yaml; `vendors:` in
    modelport.yaml adds or overrides entries with the same fields.
    """

    label: str = Field("", description="Human-readable vendor name.")
    base_url: str = Field(
        description="API base URL. May hold {placeholders}: {model} is the vendor's model "
        "id, the others come from the model's `url_params` (or this vendor's).",
    )
    docs: str | None = Field(None, description="Where the vendor documents this API.")
    adapter: Literal["openai", "anthropic"] = Field(
        "openai", description="Wire format: openai (passed through) or anthropic (translated).",
    )
    auth: Literal["bearer", "header", "query", "none"] = Field(
        "bearer", description="How the key is sent: Authorization: Bearer, a named header "
        "(auth_name), a query parameter (auth_name), or not at all.",
    )
    auth_name: str | None = Field(None, description="Header or query parameter of the key.")
    key_env: str | None = Field(None, description="Environment variable read for the key.")
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every request.")
    query: dict[str, str] = Field(
        default_factory=dict, description="Added to every URL (may hold {placeholders}).",
    )
    url_params: dict[str, str] = Field(
        default_factory=dict, description="Default values of the URL placeholders.",
    )
    streaming: bool = Field(True, description="Accepts stream: true.")
    embeddings: bool = Field(False, description="Serves /embeddings.")
    tools: bool = Field(True, description="Accepts tools (function calling).")
    completions: bool = Field(False, description="Serves the legacy /completions.")
    rename: dict[str, str] = Field(
        default_factory=dict, description="Request fields the vendor calls something else.",
    )
    drop: list[str] = Field(
        default_factory=list, description="Request fields the vendor rejects; removed.",
    )
    ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="Numeric fields clamped into the vendor's [min, max].",
    )
    max_tokens_limit: int | None = Field(
        None, ge=1, description="Largest max_tokens accepted; larger requests are capped.",
    )
    default_max_tokens: int | None = Field(
        None, ge=1, description="max_tokens sent when the client gives none (APIs that need one).",
    )
    error_code_field: str | None = Field(
        None, description="Dotted path of a status code in a 200 body; non-zero means error.",
    )
    error_message_field: str | None = Field(
        None, description="Dotted path of the message that goes with error_code_field.",
    )

    @model_validator(mode="after")
    def _auth_named(self) -> "VendorSpec":
        if self.auth in ("header", "query") and not self.auth_name:
            raise ValueError(f"auth '{self.auth}' needs auth_name (the header or parameter name)")
        return self


class OpenAIUpstreamModel(_ModelBase):
    """A model answered by an online API from inside the gateway (no local worker)."""

    engine: Literal["openai"]
    vendor: str | None = Field(
        None, description="A vendor from the vendors file or `vendors:` (e.g. deepseek); "
        "gives the base URL, the key variable and the vendor's quirks.",
    )
    base_url: str | None = Field(
        None, description="Base URL of an OpenAI-compatible API, ending in /v1 "
        "(required without `vendor`; overrides the vendor's).",
    )
    url_params: dict[str, str] = Field(
        default_factory=dict, description="Values of the vendor URL's {placeholders}, "
        "e.g. {resource: my-azure-resource}.",
    )
    api_key: str | None = Field(
        None, description="Upstream key, normally '${ENV_VAR}' (default: the vendor's key_env).",
    )
    upstream_model: str | None = Field(
        None, description="Model id sent upstream (defaults to `name`).",
    )
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to open a connection.")
    read_timeout: float = Field(
        600.0, gt=0, description="Seconds the upstream may stay silent before 504.",
    )
    max_concurrency: int = Field(256, ge=1, description="Requests in flight upstream.")
    proxy: str | None = Field(
        None, description="http://, https:// or socks5:// proxy for this upstream "
        "(the old openai_proxy).",
    )
    fallbacks: list[str] = Field(
        default_factory=list,
        description="Models tried in order when this one fails or is rate-limited.",
    )
    retries: RetrySettings = Field(default_factory=RetrySettings)
    cooldown: CooldownSettings = Field(default_factory=CooldownSettings)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None or re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", url):
            # a `${VAR}` still unset: reported as such, and a problem only if the model serves
            return url
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError("must start with http:// or https://, e.g. http://127.0.0.1:8000/v1")
        return url.rstrip("/")

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"^(https?|socks[45]h?)://", url):
            raise ValueError("must start with http://, https://, socks5:// or socks4://")
        return url

    @model_validator(mode="before")
    @classmethod
    def _where_to_send(cls, data: Any) -> Any:
        if (isinstance(data, dict) and data.get("engine") == "openai"
                and data.get("base_url") is None and data.get("vendor") is None):
            # Reported as the missing `base_url` field (not a model-level error), so the
            # message names the field to write, as for any other required field.
            raise ValidationError.from_exception_data(
                cls.__name__, [InitErrorDetails(type="missing", loc=("base_url",), input=data)])
        return data

    @field_validator("api_key", mode="after")
    @classmethod
    def _masked(cls, key: str | None) -> MaskedKey | None:
        return None if key is None else MaskedKey(key)

    @property
    def api_key_value(self) -> str | None:
        return None if self.api_key is None else str.__str__(self.api_key)


class PluginModel(OpenAIUpstreamModel):
    """A model answered by a provider class (a plugin) running inside the gateway.

    It shares the online-model fields (key, timeouts, retries, fallbacks); `base_url`
    and `api_key` are handed to the plugin, which may ignore them.
    """

    engine: Literal["plugin"]  # type: ignore[assignment]
    provider: str = Field(
        description="'package.module:ClassName', or a name from the `modelport.providers` "
        "entry-point group.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Plugin-specific settings passed to the class.",
    )

    @model_validator(mode="after")
    def _no_vendor(self) -> "PluginModel":
        if self.vendor is not None:
            raise ValueError("`vendor` is for engine: openai; a plugin reaches its API itself")
        return self
