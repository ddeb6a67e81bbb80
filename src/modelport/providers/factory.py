"""One Provider per configured model, built once at start-up."""

from __future__ import annotations

from dataclasses import replace

from modelport.config import Config, ModelConfig, OpenAIUpstreamModel, PluginModel, VendorSpec
from modelport.errors import ConfigError, normalize_upstream_error
from modelport.foreign import anthropic_upstream as anthropic
from modelport.providers.adapted import AnthropicProvider
from modelport.providers.base import Provider
from modelport.config.vendors import find_vendor, vendor_query
from modelport.providers.openai_compat import OpenAICompatProvider
from modelport.providers.plugins import build_plugin_provider
from modelport.providers.capabilities import Capabilities
from modelport.tools.support import ENGINE_DECIDES, ToolSupport
from modelport.providers.upstream import ErrorMapper, UpstreamClient


def local_worker_provider(model: ModelConfig, base_url: str, worker_secret: str,
                          tools: ToolSupport = ENGINE_DECIDES) -> Provider:
    # Local generations can be long; only a silent worker (no byte for an hour) times out.
    # The secret is the worker's per-start key (sent as Bearer, redacted from errors).
    client = UpstreamClient(base_url, label=model.name, read_timeout=3600,
                            api_key=worker_secret)
    base = Capabilities.for_config(model)
    capabilities = replace(base, tools=base.tools and tools.can_call_tools,
                           tools_note=tools.reason)
    on_llamacpp = _runs_on_llamacpp(model)
    return OpenAICompatProvider(client, capabilities, stream_always=on_llamacpp,
                                tool_format=tools.format if on_llamacpp else None)


def _runs_on_llamacpp(model: ModelConfig) -> bool:
    # `engine: auto` serves GGUF files with llama.cpp (engines/selection.py).
    path = str(getattr(model, "path", "")).lower()
    return model.engine == "llamacpp" or (model.engine == "auto" and path.endswith(".gguf"))


def online_provider(model: OpenAIUpstreamModel, config: Config) -> Provider:
    if isinstance(model, PluginModel):
        return build_plugin_provider(model)
    vendor = find_vendor(model.vendor, config.vendors) if model.vendor else None
    client = _client(model, vendor)
    if vendor is not None and vendor.adapter == "anthropic":
        return AnthropicProvider(client, vendor, upstream_model=model.upstream_model or model.name,
                                 served_name=model.name)
    capabilities = Capabilities.for_config(model) if vendor is None else Capabilities(
        chat=True, completions=vendor.completions, embeddings=vendor.embeddings,
        streaming=vendor.streaming, tools=vendor.tools)
    return OpenAICompatProvider(client, capabilities, vendor)


def _client(model: OpenAIUpstreamModel, vendor: VendorSpec | None) -> UpstreamClient:
    key = model.api_key_value
    headers: dict[str, str] = dict(vendor.headers) if vendor else {}
    query = vendor_query(vendor, model) if vendor else {}
    bearer = key
    if vendor is not None and vendor.auth != "bearer":
        bearer = None
        if vendor.auth != "none" and key is None:
            raise _missing_key(model, vendor)
        if vendor.auth == "header" and key:
            headers[vendor.auth_name] = key  # type: ignore[index]
        elif vendor.auth == "query" and key:
            query[vendor.auth_name] = key  # type: ignore[index]
    elif vendor is not None and key is None:
        raise _missing_key(model, vendor)
    assert model.base_url is not None  # filled from the vendor when the config was loaded
    return UpstreamClient(
        model.base_url, label=model.name, api_key=bearer, headers=headers, query=query,
        connect_timeout=model.connect_timeout, read_timeout=model.read_timeout,
        proxy=model.proxy, secrets=(key,) if key else (),
        error_mapper=_error_mapper(vendor),
    )


def _error_mapper(vendor: VendorSpec | None) -> ErrorMapper:
    if vendor is not None and vendor.adapter == "anthropic":
        return anthropic.error_from_status
    return normalize_upstream_error


def _missing_key(model: OpenAIUpstreamModel, vendor: VendorSpec) -> ConfigError:
    where = f"export {vendor.key_env}=... or " if vendor.key_env else ""
    return ConfigError(f"model '{model.name}' (vendor {model.vendor}) has no API key: "
                       f"{where}set api_key: ${{YOUR_VAR}} on the model")
