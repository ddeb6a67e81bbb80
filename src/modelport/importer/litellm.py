"""Import a LiteLLM proxy `config.yaml`: `model_list` entries with their `litellm_params`,
`router_settings`, `litellm_settings` and `general_settings`.

Every LiteLLM model is an online API as far as the gateway is concerned, so each becomes an
`engine: openai` model (a vendor modelport knows by name, else the entry's `api_base`).
Entries sharing a `model_name` were LiteLLM's load-balanced deployments: the first is the
model, the others its `deployments:`. `os.environ/KEY` becomes `${KEY}`; a literal key
becomes a `${VAR}` to export, never a copy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from modelport.errors import ConfigError
from modelport.importer.convert import Conversion
from modelport.importer.entries import ImportedModel, Skipped
from modelport.importer.result import NothingToImport, finish_import
from modelport.importer.secrets import KeyVault

# LiteLLM provider prefix -> modelport vendor (modelport/providers/vendors.yaml)
_VENDORS = {"openai": "openai", "deepseek": "deepseek", "moonshot": "moonshot",
            "dashscope": "qwen", "volcengine": "ark", "anthropic": "anthropic",
            "zhipuai": "zhipu", "zai": "zhipu", "minimax": "minimax"}
# prefixes that are any OpenAI-compatible server at `api_base`
_COMPATIBLE = {"openai", "hosted_vllm", "vllm", "custom_openai", "openai_like", "lm_studio",
               "llamafile", "xinference", "text-completion-openai"}
_OLLAMA = {"ollama", "ollama_chat"}
_STRATEGIES = {"simple-shuffle": "weighted", "least-busy": "least_busy"}
_ENV_VALUE = re.compile(r"^os\.environ/([A-Za-z_][A-Za-z0-9_]*)$")


def is_litellm_config(path: Path) -> bool:
    """A YAML file (by extension), or any non-Python file whose YAML has `model_list`."""
    if path.suffix == ".py":
        return False
    if path.suffix in (".yaml", ".yml"):
        return True
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "model_list" in data


def import_litellm(path: Path):
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_list"), list):
        raise ConfigError(f"{path} has no model_list: not a LiteLLM config")
    conversion = _LiteLLM(data).run()
    how = "read as a LiteLLM proxy config"
    if not conversion.models:
        why = "; ".join(f"{s.origin}: {s.reason}" for s in conversion.skipped)
        raise NothingToImport(f"no model found in {path} ({how}): model_list has "
                              f"{len(data['model_list'])} entries. Why nothing matched: "
                              f"{why or 'the list is empty'}. Nothing was written.")
    return finish_import(conversion, [path], [], how, "a LiteLLM proxy config")


def env_value(value: Any) -> Any:
    """`os.environ/KEY` -> `${KEY}`."""
    if isinstance(value, str) and _ENV_VALUE.match(value):
        return "${" + _ENV_VALUE.match(value).group(1) + "}"
    return value


class _LiteLLM:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.router = _section(data, "router_settings")
        self.settings = _section(data, "litellm_settings")
        self.vault = KeyVault()
        self.models: dict[str, ImportedModel] = {}
        self.skipped: list[Skipped] = []
        self.warnings: list[str] = []

    def run(self) -> Conversion:
        for index, item in enumerate(self.data["model_list"]):
            origin = f"model_list[{index}]"
            if not isinstance(item, dict) or not isinstance(item.get("model_name"), str):
                self.skip(origin, "no model_name; skipped")
                continue
            self.entry(item, f"{origin} ({item['model_name']})")
        self.router_settings()
        server = self.server()
        return Conversion(server, list(self.models.values()), self.warnings,
                          self.vault.env_vars, self.skipped)

    def skip(self, origin: str, reason: str) -> None:
        self.warnings.append(f"{origin}: {reason}")
        self.skipped.append(Skipped(origin, reason))

    def entry(self, item: dict[str, Any], origin: str) -> None:
        name = item["model_name"]
        params = {k: env_value(v) for k, v in _section(item, "litellm_params").items()}
        model_id = str(params.get("model", ""))
        provider, _, upstream = model_id.partition("/") if "/" in model_id else \
            ("openai", "", model_id)
        where = self.where(provider, params, origin)
        if isinstance(where, str):
            self.skip(origin, where)
            return
        key = params.get("api_key")
        if isinstance(key, str) and key.startswith("${"):
            self.vault.env_vars.setdefault(key[2:-1], f"API key of '{name}' (LiteLLM read it "
                                                      "from here too)")
        elif key is not None:
            key, warning = self.vault.reference(name, key, origin)
            if warning:
                self.warnings.append(warning)
        if name in self.models:
            self.deployment(self.models[name], where, key, params, upstream, origin)
            return
        model: dict[str, Any] = {"name": name, "engine": "openai", **where}
        if upstream and upstream != name:
            model["upstream_model"] = upstream
        if key is not None:
            model["api_key"] = key
        self.options(model, params, _section(item, "model_info"), origin)
        kind = "embedding" if _section(item, "model_info").get("mode") == "embedding" else "llm"
        self.models[name] = ImportedModel(model, [f"from {origin}"], kind=kind, old_name=name,
                                          origin=origin)

    def where(self, provider: str, params: dict[str, Any], origin: str) -> dict[str, Any] | str:
        base = params.get("api_base") or params.get("base_url")
        if provider == "azure":
            host = urlsplit(str(base or "")).hostname or ""
            match = re.match(r"^([a-z0-9-]+)\.openai\.azure\.com$", host)
            if not match:
                return f"azure api_base {base!r} is not https://<resource>.openai.azure.com"
            url_params = {"resource": match.group(1)}
            if params.get("api_version"):
                url_params["api_version"] = str(params["api_version"])
            return {"vendor": "azure", "url_params": url_params}
        if provider in _OLLAMA:
            return {"base_url": str(base or "http://localhost:11434").rstrip("/") + "/v1"}
        if base:
            found = {"base_url": str(base)}
            return {"vendor": _VENDORS[provider], **found} if provider in _VENDORS and \
                provider not in _COMPATIBLE else found
        if provider in _VENDORS:
            return {"vendor": _VENDORS[provider]}
        return (f"provider {provider!r} has no api_base and no vendor of that name in "
                "modelport; add it by hand (engine: openai, base_url)")

    def deployment(self, model: ImportedModel, where: dict[str, Any], key: Any,
                   params: dict[str, Any], upstream: str, origin: str) -> None:
        """A further entry with the same model_name: LiteLLM balanced requests over them."""
        url = where.get("base_url")
        if not url or where.get("vendor") not in (None, model.entry.get("vendor")):
            self.skip(origin, "a further deployment of this name without its own api_base "
                              "cannot be added to it; skipped")
            return
        if upstream != model.entry.get("upstream_model", model.name):
            self.warnings.append(f"{origin}: its model id {upstream!r} differs from the first "
                                 "deployment's; modelport sends the first one's to every "
                                 "deployment")
        deployment: dict[str, Any] = {"url": url}
        if key is not None:
            deployment["api_key"] = key
        if isinstance(params.get("weight"), (int, float)):
            deployment["weight"] = params["weight"]
        model.entry.setdefault("deployments", []).append(deployment)
        model.also.append(origin)

    def options(self, model: dict[str, Any], params: dict[str, Any], info: dict[str, Any],
                origin: str) -> None:
        timeout = params.get("timeout") or self.router.get("timeout") or \
            self.settings.get("request_timeout")
        if isinstance(timeout, (int, float)) and timeout > 0:
            model["read_timeout"] = timeout
        retries = params.get("max_retries", self.router.get("num_retries",
                                                            self.settings.get("num_retries")))
        if isinstance(retries, int) and 0 <= retries <= 9:
            model["retries"] = {"attempts": retries + 1}
        if isinstance(params.get("max_parallel_requests"), int):
            model["max_concurrency"] = params["max_parallel_requests"]
        cost_in, cost_out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
        if isinstance(cost_in, (int, float)) and isinstance(cost_out, (int, float)):
            model["price"] = {"input": cost_in * 1e6, "output": cost_out * 1e6}
        for limit in ("rpm", "tpm"):
            if limit in params:
                self.warnings.append(f"{origin}: {limit} was dropped; modelport limits "
                                     "requests and tokens per API key (docs/teams.md)")

    def router_settings(self) -> None:
        strategy = self.router.get("routing_strategy")
        mapped = _STRATEGIES.get(strategy) if isinstance(strategy, str) else None
        if strategy is not None and mapped is None:
            self.warnings.append(f"router_settings.routing_strategy {strategy!r} has no "
                                 "equivalent; models with deployments use least_busy")
        cooldown = {k: v for k, v in (("failures", self.router.get("allowed_fails")),
                                      ("seconds", self.router.get("cooldown_time")))
                    if isinstance(v, (int, float))}
        fallbacks: dict[str, list[str]] = {}
        for source in (self.settings.get("fallbacks"), self.router.get("fallbacks")):
            for rule in source if isinstance(source, list) else []:
                for name, targets in (rule.items() if isinstance(rule, dict) else []):
                    fallbacks.setdefault(name, []).extend(t for t in targets or []
                                                          if t in self.models)
        for model in self.models.values():
            if mapped and model.entry.get("deployments"):
                model.entry["strategy"] = mapped
            if cooldown:
                model.entry["cooldown"] = dict(cooldown)
            if fallbacks.get(model.name):
                model.entry["fallbacks"] = fallbacks[model.name]

    def server(self) -> dict[str, Any]:
        server: dict[str, Any] = {}
        host, port = self.router.get("redis_host"), self.router.get("redis_port", 6379)
        if host:
            password = env_value(self.router.get("redis_password"))
            if password and not str(password).startswith("${"):
                password = "${MODELPORT_REDIS_PASSWORD}"  # a secret is never copied
                self.vault.env_vars["MODELPORT_REDIS_PASSWORD"] = "the Redis password, " \
                    "written in router_settings.redis_password"
            auth = f":{password}@" if password else ""
            server["redis_url"] = f"redis://{auth}{env_value(host)}:{env_value(port)}"
        master = env_value(_section(self.data, "general_settings").get("master_key"))
        if isinstance(master, str) and master.startswith("${"):
            server["master_key"] = master
        elif master:
            server["master_key"] = "${MODELPORT_MASTER_KEY}"
            self.vault.env_vars["MODELPORT_MASTER_KEY"] = "the admin (master) key, written in "\
                "general_settings.master_key"
        return server


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    return value if isinstance(value, dict) else {}
