"""The vendors file: looking a vendor up and filling a model's URL and key from it."""

from __future__ import annotations

import difflib
import os
import re
from functools import lru_cache
from importlib import resources

import yaml

from modelport.config.upstream_models import OpenAIUpstreamModel, VendorSpec
from modelport.errors import ConfigError

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@lru_cache(maxsize=1)
def builtin_vendors() -> dict[str, VendorSpec]:
    text = resources.files("modelport.config").joinpath("vendors.yaml").read_text("utf-8")
    return {name: VendorSpec.model_validate(entry) for name, entry in yaml.safe_load(text).items()}


def find_vendor(name: str, user_vendors: dict[str, VendorSpec]) -> VendorSpec:
    """The user's entry of that name, else the built-in one; a clear error otherwise."""
    if name in user_vendors:
        return user_vendors[name]
    known = builtin_vendors()
    if name in known:
        return known[name]
    names = sorted({*known, *user_vendors})
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ValueError(
        f"unknown vendor '{name}'; {hint}known vendors: {', '.join(names)} "
        "(add your own under `vendors:`)"
    )


def render(template: str, params: dict[str, str], where: str) -> str:
    """Fill {placeholders}; a missing value names the url_params entry to add."""

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in params:
            raise ValueError(f"{where} needs url_params.{key} (its URL contains {{{key}}})")
        return params[key]

    return _PLACEHOLDER.sub(value, template)


def url_params(spec: VendorSpec, model: OpenAIUpstreamModel) -> dict[str, str]:
    return {**spec.url_params, **model.url_params,
            "model": model.upstream_model or model.name}


def vendor_query(spec: VendorSpec, model: OpenAIUpstreamModel) -> dict[str, str]:
    params = url_params(spec, model)
    where = f"model '{model.name}' (vendor {model.vendor})"
    return {name: render(value, params, where) for name, value in spec.query.items()}


def resolve_vendors(models: list, user_vendors: dict[str, VendorSpec], source: str) -> None:
    """Fill each `vendor:` model's base URL and key from its vendor entry (the built-in
    vendors file, the config's `vendors:`, the key's variable), so that every later reader
    (the gateway, `modelport check`) sees where requests really go. Runs after the file
    was validated: the schema itself reads no other file and no environment."""
    for model in models:
        if isinstance(model, OpenAIUpstreamModel) and model.vendor is not None:
            try:
                apply_vendor(model, user_vendors)
            except ValueError as error:
                raise ConfigError(f"{source}: model '{model.name}': {error}") from None


def apply_vendor(model: OpenAIUpstreamModel, user_vendors: dict[str, VendorSpec]) -> None:
    """Give a `vendor:` model its base URL (unless overridden) and its key from key_env."""
    assert model.vendor is not None
    spec = find_vendor(model.vendor, user_vendors)
    where = f"model '{model.name}' (vendor {model.vendor})"
    model.base_url = render(model.base_url or spec.base_url, url_params(spec, model), where)
    vendor_query(spec, model)  # fail at load time, not on the first request
    if model.api_key is None and spec.key_env and os.environ.get(spec.key_env):
        model.api_key = os.environ[spec.key_env]  # type: ignore[assignment]  (validated to MaskedKey)
