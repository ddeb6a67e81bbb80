"""Online models of the old config: `llm_model_dict` entries served elsewhere, and
`ONLINE_LLM_MODEL`.

A vendor class modelport knows becomes `vendor: NAME` (its endpoint and quirks come
from modelport's vendors file); any other `provider:` class becomes a plugin to port;
an entry without a class calls its `api_base_url` as an OpenAI-compatible API.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from modelport.importer.entries import ImportedModel, from_comment, label_of
from modelport.importer.pysource import EnvRef
from modelport.importer.secrets import KeyVault, env_var_name
from modelport.importer.vendors import OLD_ENTRY_NAMES, OPENAI, old_provider

# Fields of an online entry that are read below; any other non-empty field is reported.
_ONLINE_FIELDS = {"model_name", "version", "api_base_url", "api_key", "openai_proxy",
                  "provider", "local_model_path", "deployment_name", "resource_name",
                  "api_version"}
_ONLINE_SECRETS = {"secret_key", "APISecret", "api_secret", "secret"}


def azure_base_url(resource_name: str) -> str:
    """Azure OpenAI's v1 endpoint takes the standard OpenAI client (deployment as model)."""
    return f"https://{resource_name}.openai.azure.com/openai/v1"


class OnlineModels:
    """Turns one old online entry into a model, or says why it could not."""

    def __init__(self, vault: KeyVault, warn: Callable[[str], None],
                 is_old_gateway: Callable[[str], bool]) -> None:
        self.vault = vault
        self.warn = warn
        self.is_old_gateway = is_old_gateway

    def convert(self, name: str, entry: dict[str, Any], origin: str) -> ImportedModel | str:
        """The model, or the reason (a sentence) it was not imported."""
        provider = entry.get("provider") or OLD_ENTRY_NAMES.get(name)
        vendor = old_provider(provider)
        upstream = entry.get("model_name") or entry.get("version")
        url = self.url(name, entry, origin, provider)
        model: dict[str, Any] = {"name": name, "engine": "openai"}
        if provider == "AzureWorker" and url is None and entry.get("resource_name"):
            url = azure_base_url(str(entry["resource_name"]))
            upstream = entry.get("deployment_name") or upstream
        elif provider and (vendor is None or not (vendor.name or vendor.base_url
                                                   or provider == "AzureWorker")):
            return self.plugin(name, entry, origin, str(provider))
        if vendor is not None and vendor.name:
            model["vendor"] = vendor.name  # its base URL unless the entry gives another
        elif url is None and vendor is not None:
            url = vendor.base_url
        elif url is None and provider is None and name.lower().startswith("openai"):
            model["vendor"], vendor = OPENAI.name, OPENAI
        if url is None and "vendor" not in model:
            return "neither an api_base_url nor a provider class; not imported"
        if url is not None and not (vendor is not None and url == vendor.base_url
                                    and "vendor" in model):
            if not re.match(r"^(https?://|\$\{)", url):
                return f"api_base_url {url!r} is not an http(s) URL; not imported"
            model["base_url"] = url
        if isinstance(upstream, str) and upstream and upstream != name:
            model["upstream_model"] = upstream
        self.key_and_proxy(model, name, entry, origin)
        self.report_fields(origin, entry, vendor)
        comments = [from_comment(origin)]
        if provider:
            comments.append(f"old provider: {provider}; vendor: "
                            + (vendor.label if vendor else "unknown to modelport"))
        return ImportedModel(model, comments, origin=label_of(origin))

    def url(self, name: str, entry: dict[str, Any], origin: str,
            provider: Any) -> str | None:
        """The entry's own endpoint; `${VAR}` where it was read from, or left, unset."""
        raw = entry.get("api_base_url")
        if isinstance(raw, EnvRef):
            var = raw.var
            reference = EnvRef(var, raw.default, required=raw.default is None).as_reference()
        elif isinstance(raw, str) and raw and not self.is_old_gateway(raw):
            return raw
        elif "api_base_url" in entry and not raw and not provider:
            var = env_var_name(name).removesuffix("_API_KEY") + "_BASE_URL"
            reference = f"${{{var}}}"
        else:
            return None
        self.vault.env_vars.setdefault(var, f"base URL of '{name}' (the old api_base_url)")
        self.warn(f"{origin}: the api_base_url is not set here; it is read from {var}: "
                  f"export {var}=<the OpenAI-compatible base URL> before starting modelport")
        return reference

    def key_and_proxy(self, model: dict[str, Any], name: str, entry: dict[str, Any],
                      origin: str) -> None:
        api_key, key_warning = self.vault.reference(name, entry.get("api_key"), origin)
        model["api_key"] = api_key
        if key_warning:
            self.warn(key_warning)
        proxy = entry.get("openai_proxy")
        if isinstance(proxy, str) and proxy:
            model["proxy"] = proxy
        elif isinstance(proxy, EnvRef):
            # an unset variable would leave an empty proxy, so only the user can decide
            self.warn(f"{origin}: openai_proxy was read from {proxy.var}; add "
                      f"`proxy: ${{{proxy.var}}}` to this model if you use that proxy")

    def plugin(self, name: str, entry: dict[str, Any], origin: str,
               provider: str) -> ImportedModel:
        """A worker class with no OpenAI-compatible endpoint: the class is code, so it is
        named as a plugin to port (docs/providers.md, "Porting an old do_chat worker")."""
        model: dict[str, Any] = {"name": name, "engine": "plugin", "provider": provider}
        url = entry.get("api_base_url")
        if isinstance(url, str) and re.match(r"^https?://", url):
            model["base_url"] = url
        self.key_and_proxy(model, name, entry, origin)
        options = {key: value for key, value in entry.items()
                   if key not in _ONLINE_FIELDS - {"version", "model_name"}
                   and key not in _ONLINE_SECRETS and isinstance(value, (str, int, float))
                   and value != ""}
        if options:
            model["options"] = options
        for key in _ONLINE_SECRETS & {k for k, v in entry.items() if v}:
            self.warn(f"{origin}: {key} was not copied; give it to the plugin as "
                      f"options.{key}: ${{VAR}} once it is ported")
        self.warn(f"{origin}: provider class {provider!r} has no OpenAI-compatible endpoint "
                  "known to modelport; it is listed as a plugin: port the class to "
                  "DoChatProvider and set `provider: package.module:Class`")
        return ImportedModel(model, [from_comment(origin), f"old provider: {provider}; "
                                     "a plugin to port"], origin=label_of(origin))

    def report_fields(self, label: str, entry: dict[str, Any], vendor: Any) -> None:
        # Field names only, never values: some of them are secrets.
        for key, value in entry.items():
            if value in (None, "", False) or key in _ONLINE_FIELDS:
                continue
            if key in _ONLINE_SECRETS:
                self.warn(f"{label}: {key} was dropped (not used by the OpenAI-compatible "
                          "API, and never copied into the YAML)")
            else:
                self.warn(f"{label}: field {key!r} is not used by modelport; dropped")
        if vendor is not None and vendor.credentials_note:
            self.warn(f"{label}: {vendor.credentials_note}")

    def openai_embedding(self, name: str, value: Any, origin: str) -> ImportedModel:
        """The old dict listed OpenAI embeddings with the API key where the path goes."""
        api_key, key_warning = self.vault.reference(name, value, origin)
        if key_warning:
            self.warn(key_warning)
        entry = {"name": name, "engine": "openai", "vendor": OPENAI.name, "api_key": api_key}
        return ImportedModel(entry, [from_comment(origin) + ": OpenAI embeddings"],
                             kind="embedding", origin=label_of(origin))
