"""Map the values of the old config files to modelport's `server:` and `models:` entries.

The old system's rules, kept here (MISSION.md, "The system it replaces"):
- `llm_model_dict` / `MODEL_PATH["llm_model"]` are local models; their paths stay as
  written, so relative ones resolve against models_dir exactly as before;
- a model also in `VLLM_MODEL_DICT` is served by vLLM (vLLM wins);
- `ONLINE_LLM_MODEL` (and llm_model_dict entries pointing at a remote API) are online
  models, reached through the vendor's OpenAI-compatible endpoint;
- `LLM_MODEL(s)` / `EMBEDDING_MODEL` name what starts; the rest get `autostart: false`;
- `MODEL_PATH["reranker"]` are cross-encoders (a GGUF one: llama.cpp with reranking);
  only `RERANKER_MODEL`, and only when `USE_RERANKER` is True, starts;
- `FSCHAT_MODEL_WORKERS` gives each local model its host, port and options;
- embedding models and rerankers: see retrieval.py.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from modelport.importer.entries import ImportedModel, Skipped, from_comment, label_of
from modelport.importer.online import OnlineModels
from modelport.importer.pysource import EnvRef, ModuleValues
from modelport.importer.retrieval import EMBEDDINGS_DIR_NAMES, RetrievalTables, mapping_of
from modelport.importer.secrets import KeyVault, is_placeholder_key
from modelport.importer.workers import DEVICES, wants_vllm, worker_settings

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", "::1", "::"}
OLD_API_PORT = 8888
_MODELS_DIR_NAMES = ("MODEL_ROOT_PATH", "MODELS_ROOT_PATH", "MODEL_ROOT", "MODELS_DIR",
                     "MODEL_DIR", "LOCAL_LLM_MODEL_DIR")
_GATEWAY_NAMES = ("FSCHAT_OPENAI_API", "OPENAI_API")
_STARTER_NAMES = ("LLM_MODELs", "LLM_MODELS", "LLM_MODEL")
MODEL_TABLES = ("llm_model_dict", "VLLM_MODEL_DICT", "ONLINE_LLM_MODEL", "embedding_model_dict",
                "MODEL_PATH")
# Every setting the conversion reads: running the old config reads back these only.
READ_NAMES = (*MODEL_TABLES, *_MODELS_DIR_NAMES, *EMBEDDINGS_DIR_NAMES, *_GATEWAY_NAMES,
              *_STARTER_NAMES, "openai_api_port", "EMBEDDING_MODEL", "EMBEDDING_DEVICE",
              "LLM_DEVICE", "FSCHAT_MODEL_WORKERS", "USE_RERANKER", "RERANKER_MODEL",
              "RERANKER_MAX_LENGTH")
# Entry keys in output order; anything else follows.
_KEY_ORDER = ("name", "aliases", "engine", "provider", "vendor", "path", "base_url",
              "upstream_model", "api_key", "proxy", "host", "port", "device", "autostart", "context_length", "parallel",
              "reranking", "max_input_tokens", "tensor_parallel_size", "gpu_memory_utilization",
              "max_model_len", "quantization", "dtype", "trust_remote_code", "options", "extra_args")


@dataclass
class Conversion:
    server: dict[str, Any]
    models: list[ImportedModel]
    warnings: list[str]
    env_vars: dict[str, str]
    skipped: list[Skipped] = field(default_factory=list)


def convert(model_config: ModuleValues, server_config: ModuleValues | None) -> Conversion:
    return _Converter(model_config, server_config).run()


class _Converter(RetrievalTables):
    def __init__(self, model_config: ModuleValues, server_config: ModuleValues | None) -> None:
        self.files = [f for f in (server_config, model_config) if f is not None]
        self.warnings: list[str] = []
        self.vault = KeyVault()
        self.models: dict[str, ImportedModel] = {}
        self.skipped: list[Skipped] = []
        self.old_api_port = OLD_API_PORT
        self.online = OnlineModels(self.vault, self.warn, self.is_old_gateway)
        # the old project's folder: configs/model_config.py is in its configs/ folder
        self.project = posixpath.dirname(posixpath.dirname(str(model_config.file.resolve())))

    # -- reading the old values ---------------------------------------------------------

    def value(self, name: str) -> Any:
        for values in self.files:
            if name in values.values:
                return values.values[name]
        return None

    def where(self, name: str) -> str:
        for values in self.files:
            if name in values.values:
                return values.where(name)
        return "the old config"

    def locate(self, name: str, *keys: Any) -> str:
        for values in self.files:
            if name in values.values:
                return values.locate(name, *keys)
        return name + "".join(f"[{key!r}]" for key in keys)

    def mapping(self, name: str) -> dict[str, Any]:
        value = self.value(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.warn(f"{self.where(name)}: {name} is not a dict; ignored")
            return {}
        return value

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def skip(self, origin: str, reason: str) -> None:
        """An old entry that becomes no model: a warning, and a row of the import table."""
        self.warn(f"{origin}: {reason}")
        self.skipped.append(Skipped(label_of(origin), reason))

    # -- the conversion -----------------------------------------------------------------

    def run(self) -> Conversion:
        server = self.server()
        self.local_llms()
        self.vllm_models()
        self.online_models()
        self.embedding_models()
        self.rerankers()
        self.apply_workers()
        self.apply_autostart()
        self.check_ports(server.get("port", OLD_API_PORT))
        models = [self.ordered(model) for model in self.models.values()]
        return Conversion(server, models, self.warnings, self.vault.env_vars, self.skipped)

    def server(self) -> dict[str, Any]:
        server: dict[str, Any] = {}
        for name in _MODELS_DIR_NAMES:
            root = self.value(name)
            if isinstance(root, EnvRef):
                root = root.as_reference()
            if isinstance(root, str) and root:
                server["models_dir"] = root
                break
        gateway_name = next((n for n in _GATEWAY_NAMES if self.value(n)), None)
        gateway = self.mapping(gateway_name) if gateway_name else {}
        port = gateway.get("port", self.value("openai_api_port"))
        if isinstance(port, int) and 1 <= port <= 65535:
            server["port"] = port
            self.old_api_port = port
        host = gateway.get("host")
        if gateway_name and isinstance(host, str) and host not in ("127.0.0.1", "localhost"):
            self.warn(f"{self.locate(gateway_name, 'host')}: the old OpenAI API bound {host}; "
                      "modelport binds 127.0.0.1 unless server.host is set, and a public "
                      "host needs server.api_keys")
        return server

    def local_llms(self) -> None:
        for name, entry in self.mapping("llm_model_dict").items():
            origin = self.locate("llm_model_dict", name)
            if isinstance(entry, str):
                self.add_local(str(name), entry, origin)
            elif isinstance(entry, dict):
                self.llm_dict_entry(str(name), entry, origin)
            else:
                self.skip(origin, "not a dict; skipped")
        model_path = self.mapping("MODEL_PATH")
        for name, path in mapping_of(model_path.get("llm_model")).items():
            self.add_local(str(name), path, self.locate("MODEL_PATH", "llm_model", name))

    def llm_dict_entry(self, name: str, entry: dict[str, Any], origin: str) -> None:
        path = entry.get("local_model_path")
        url = entry.get("api_base_url")
        remote = isinstance(url, str) and bool(url) and not self.is_old_gateway(url)
        # `"api_base_url": os.environ.get("API_BASE_URL")` with the variable unset: the
        # old service sent this model to an online API whose address was left to the user
        unset_url = "api_base_url" in entry and (not url or isinstance(url, EnvRef))
        if entry.get("provider") or remote or unset_url:
            if path and isinstance(path, str) and path not in (name, entry.get("model_name")):
                self.warn(f"{origin}: requests went to {url if remote else 'an online API'}, so "
                          "local_model_path is not used")
            self.add_online(name, entry, origin)
        elif path:
            if not is_placeholder_key(entry.get("api_key")):
                self.warn(f"{origin}: the api_key of this local model was dropped; "
                          "modelport protects its gateway with server.api_keys")
            self.add_local(name, path, origin)
        else:
            self.skip(origin, "neither a local_model_path nor an online api_base_url; "
                              "skipped")

    def is_old_gateway(self, url: str) -> bool:
        """The old system's own OpenAI API (localhost:8888): the model was served locally."""
        try:
            parts = urlsplit(url)
            return parts.hostname in _LOOPBACK_HOSTS and parts.port == self.old_api_port
        except ValueError:
            return False

    def add_local(self, name: str, path: Any, origin: str, engine: str | None = None) -> None:
        if isinstance(path, EnvRef):
            path = path.as_reference()
        if not isinstance(path, str) or not path:
            self.skip(origin, "no usable path; skipped")
            return
        if engine is None:
            engine = "llamacpp" if path.lower().endswith(".gguf") else "auto"
        self.add(ImportedModel({"name": name, "engine": engine, "path": path},
                               [from_comment(origin)], origin=label_of(origin)), origin)

    def vllm_models(self) -> None:
        for name, path in self.mapping("VLLM_MODEL_DICT").items():
            origin = self.locate("VLLM_MODEL_DICT", name)
            model = self.find(str(name))
            if model is None:
                self.add_local(str(name), path, origin, engine="vllm")
                continue
            model.entry["engine"] = "vllm"
            if isinstance(path, str) and path:
                model.entry["path"] = path
            model.also.append(label_of(origin))
            model.comments.append(f"also {from_comment(origin)}: served with vLLM, which takes "
                                  "precedence")

    def online_models(self) -> None:
        for name, entry in self.mapping("ONLINE_LLM_MODEL").items():
            origin = self.locate("ONLINE_LLM_MODEL", name)
            if isinstance(entry, dict):
                self.add_online(str(name), entry, origin)
            else:
                self.skip(origin, "not a dict; skipped")

    def add_online(self, name: str, entry: dict[str, Any], origin: str) -> None:
        model = self.online.convert(name, entry, origin)
        if isinstance(model, str):
            self.skip(origin, model)
        else:
            self.add(model, origin)

    def add(self, model: ImportedModel, origin: str) -> None:
        """Register a model under a valid, unused name (the old name stays as an alias)."""
        original = model.name
        name = re.sub(r"[^A-Za-z0-9._:/@+-]", "-", original).lstrip("._:/@+-") or "model"
        if name in self.models:
            name = f"{name}-{model.kind if model.kind != 'llm' else 'online'}"
        if name in self.models:
            self.skip(origin, f"{original!r} is defined twice; the second one was skipped")
            return
        if name != original:
            self.warn(f"{origin}: {original!r} was renamed {name!r} (the name must be unique "
                      "and use letters, digits and . _ : / @ + -); the old name is an alias")
            if _NAME_PATTERN.match(name) and original not in self.models:
                model.entry["aliases"] = [original]
        model.entry["name"] = name
        model.old_name = original
        self.models[name] = model

    def find(self, old_name: str) -> ImportedModel | None:
        return next((m for m in self.models.values() if m.old_name == old_name), None)

    def apply_workers(self) -> None:
        workers = self.mapping("FSCHAT_MODEL_WORKERS")
        llm_device = self.value("LLM_DEVICE")
        default = workers.get("default")
        if isinstance(default, dict) and (default.get("host") or default.get("port")):
            self.warn(f"{self.locate('FSCHAT_MODEL_WORKERS', 'default')}: its host and port "
                      "are not given to every model; a worker without its own port gets a "
                      "free one, on 127.0.0.1")
        for model in self.models.values():
            entry = model.entry
            if entry["engine"] in ("openai", "plugin"):
                continue
            if model.kind != "llm" and model.old_name not in workers:
                continue  # the old system loaded embeddings and rerankers in its API server
            if entry["engine"] == "auto" and wants_vllm(workers, model.old_name):
                entry["engine"] = "vllm"
                model.comments.append("infer_turbo: vllm in FSCHAT_MODEL_WORKERS: served "
                                      "with vLLM")
            settings = worker_settings(workers, model.old_name, entry["engine"], self.locate,
                                       include_default=model.kind == "llm")
            if model.old_name in workers:
                model.also.append(f"FSCHAT_MODEL_WORKERS[{model.old_name!r}]")
            if model.kind == "llm" and llm_device in DEVICES and llm_device != "auto":
                entry.setdefault("device", llm_device)
            entry.update(settings.fields)
            if settings.options:
                entry["options"] = settings.options
            if settings.extra_args:
                entry["extra_args"] = settings.extra_args
            for warning in settings.warnings:
                self.warn(warning)
            host = entry.get("host")
            if host and host not in ("127.0.0.1", "localhost", "::1"):
                self.warn(f"{self.locate('FSCHAT_MODEL_WORKERS', model.old_name, 'host')}: "
                          f"the worker of {model.name!r} binds {host}, reachable from the "
                          "network without authentication; use 127.0.0.1 unless the gateway "
                          "runs on another machine")
        known = {m.old_name for m in self.models.values()} | set(self.mapping("ONLINE_LLM_MODEL"))
        for name in workers:
            if name != "default" and name not in known:
                self.warn(f"{self.locate('FSCHAT_MODEL_WORKERS', name)}: names no configured "
                          "model; ignored")

    def apply_autostart(self) -> None:
        starters = self.starter_names("LLM", _STARTER_NAMES)
        embedder = self.starter_names("embedding", ("EMBEDDING_MODEL",))
        for model in self.models.values():
            if model.kind == "reranker":
                continue  # decided by USE_RERANKER in rerankers()
            chosen = embedder if model.kind == "embedding" else starters
            if chosen is not None and model.old_name not in chosen:
                model.entry["autostart"] = False

    def starter_names(self, kind: str, variables: tuple[str, ...]) -> set[str] | None:
        """Names the old config started; None when it named none (then all start)."""
        names: set[str] = set()
        found = False
        for variable in variables:
            value = self.value(variable)
            if value is None:
                continue
            found = True
            listed = [value] if isinstance(value, str) else value
            for name in listed if isinstance(listed, list) else []:
                names.add(str(name))
                if self.find(str(name)) is None:
                    self.warn(f"{self.where(variable)}: {variable} names {name!r}, which is "
                              f"not an imported {kind} model")
        return names if found else None

    def check_ports(self, gateway_port: int) -> None:
        used: dict[int, str] = {gateway_port: "the gateway (server.port)"}
        for model in self.models.values():
            port = model.entry.get("port")
            if port is None:
                continue
            if port in used:
                self.warn(f"{used[port]} and model {model.name!r} both use port {port}; "
                          "change one of them")
            used.setdefault(port, f"model {model.name!r}")

    @staticmethod
    def ordered(model: ImportedModel) -> ImportedModel:
        rank = {key: index for index, key in enumerate(_KEY_ORDER)}
        entry = dict(sorted(model.entry.items(), key=lambda kv: rank.get(kv[0], len(rank))))
        return ImportedModel(entry, model.comments, model.kind, model.old_name, model.origin,
                             model.also)
