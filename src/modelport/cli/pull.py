"""`modelport pull`: download a Hugging Face repo (or one file of it) into models_dir.

The folder layout is `models_dir/<org>/<name>`, the one relative model paths already
use (`path: Qwen/Qwen2.5-7B-Instruct`), so a pulled model is configured by its repo id.
Many of our users have no internet on the serving machine: there the command must fail
at once (not after minutes of retries) and say what to copy where instead.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from modelport.errors import ConfigError

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE_VALUES = {"1", "true", "yes", "on"}
# Hugging Face's own rule: letters, digits, - _ . ; no leading/trailing - or . ; no -- or ..
_REPO_PART = re.compile(r"^(?![-.])(?!.*(--|\.\.))[A-Za-z0-9_.-]{1,96}(?<![-.])$")


class PullError(ConfigError):
    """The model cannot be downloaded here; the message says what to do instead."""


def validate_repo_id(repo_id: str) -> tuple[str, str]:
    """`org/name` -> (org, name); anything else is a PullError with an example."""
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(_REPO_PART.match(part) for part in parts):
        raise PullError(
            f"{repo_id!r} is not a Hugging Face repo id; write it as org/name, "
            "e.g. Qwen/Qwen2.5-0.5B-Instruct"
        )
    return parts[0], parts[1]


def target_dir(repo_id: str, models_dir: Path) -> Path:
    """Where the repo goes: models_dir/<org>/<name>, the path a config entry names."""
    org, name = validate_repo_id(repo_id)
    return Path(models_dir) / org / name


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_ENDPOINT


def offline_reason(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the hub cannot be used from here, or None when it can be tried."""
    for variable in _OFFLINE_VARIABLES:
        if os.environ.get(variable, "").strip().lower() in _TRUE_VALUES:
            return f"{variable} is set"
    host, port = _probe_address(endpoint)
    if not hub_reachable(host, port, timeout):
        return f"{host}:{port} cannot be reached (tried for {timeout:g} s)"
    return None


def hub_reachable(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when a TCP connection to host:port opens within `timeout` seconds.

    Name resolution has no timeout of its own and can hang for much longer on a
    machine without network, so the whole attempt runs in a thread we stop waiting for.
    """
    outcome: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    worker = threading.Thread(target=attempt, name="hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(outcome and outcome[0])


def _probe_address(endpoint: str) -> tuple[str, int]:
    """The address a download would connect to first: the HTTPS proxy when one is set."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    parts = urlsplit(proxy if proxy else endpoint)
    default_port = 443 if parts.scheme == "https" else 80
    return parts.hostname or "huggingface.co", parts.port or default_port


def pull(repo_id: str, models_dir: Path, filename: str | None = None,
         revision: str | None = None) -> Path:
    """Download `repo_id` (or only `filename` of it) into models_dir/<org>/<name>.

    Returns the folder, or the file when `filename` is given. An interrupted download
    resumes where it stopped when run again; files already complete are skipped.
    """
    target = target_dir(repo_id, models_dir)
    if filename is not None:
        _check_filename(filename)
    endpoint = hub_endpoint()
    reason = offline_reason(endpoint)
    if reason is not None:
        wanted = f"{repo_id}/{filename}" if filename else repo_id
        raise PullError(
            f"cannot download {wanted}: the Hugging Face hub ({endpoint}) is not available "
            f"here ({reason}). On a machine with internet access, download it (e.g. "
            f"`modelport pull {repo_id}{' --file ' + filename if filename else ''}`) and "
            f"copy the model folder to {target.resolve()}; then name it in the config "
            f"as `path: {repo_id}`."
        )
    # Imported here: huggingface_hub is heavy and only this command needs it; so is httpx,
    # which `serve` would otherwise import on its start path (this module locates models).
    import httpx
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import (EntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    target.mkdir(parents=True, exist_ok=True)
    try:
        # huggingface_hub draws the progress bars (unless HF_HUB_DISABLE_PROGRESS_BARS)
        # and, with local_dir, keeps partial files there to resume from.
        if filename is not None:
            return Path(hf_hub_download(repo_id, filename, revision=revision,
                                        local_dir=target))
        return Path(snapshot_download(repo_id, revision=revision, local_dir=target))
    except RepositoryNotFoundError:
        raise PullError(f"{repo_id} was not found on {endpoint} (a private or gated repo "
                        "also needs HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise PullError(f"{repo_id} has no revision {revision!r}") from None
    except EntryNotFoundError:
        raise PullError(f"{repo_id} has no file {filename!r}") from None
    except (OSError, httpx.HTTPError) as error:
        raise PullError(f"the download of {repo_id} into {target} stopped: {error}; run "
                        "the same command again to resume it") from None


def _check_filename(filename: str) -> None:
    path = PurePosixPath(filename)
    if path.is_absolute() or ".." in path.parts or not filename.strip():
        raise PullError(f"{filename!r} is not a file name inside the repo "
                        "(e.g. qwen2.5-0.5b-instruct-q4_k_m.gguf)")


DEFAULT_MODELSCOPE_ENDPOINT = "https://modelscope.cn"


def pull_modelscope(location: str, revision: str | None = None) -> Path:
    """Download `modelscope:org/repo[:file]` into the ModelScope cache, where a model's
    `path: modelscope:org/repo` finds it. Returns the folder, or the file."""
    from modelport.config.locations import modelscope_cache, modelscope_id

    repo_id, filename = modelscope_id(location)
    validate_repo_id(repo_id)
    if filename is not None:
        _check_filename(filename)
    endpoint = os.environ.get("MODELSCOPE_DOMAIN", "").strip()
    endpoint = (f"https://{endpoint}" if endpoint and "://" not in endpoint else endpoint) \
        or DEFAULT_MODELSCOPE_ENDPOINT
    host, port = _probe_address(endpoint)
    if not hub_reachable(host, port):
        raise PullError(
            f"cannot download {location}: ModelScope ({endpoint}) is not available here "
            f"({host}:{port} cannot be reached within {PROBE_TIMEOUT_S:g} s). On a machine "
            f"with internet access run `modelport pull {location}` and copy its ModelScope "
            f"cache ({modelscope_cache()}) here (or point $MODELSCOPE_CACHE at the copy); "
            f"then name it in the config as `path: {location}`.")
    try:
        from modelscope.hub.file_download import model_file_download
        from modelscope.hub.snapshot_download import snapshot_download
    except ImportError:
        raise PullError("downloads from ModelScope need the modelscope package: "
                        "pip install 'modelport[modelscope]'") from None
    try:
        if filename is not None:
            return Path(model_file_download(repo_id, filename, revision=revision))
        return Path(snapshot_download(repo_id, revision=revision))
    except Exception as error:  # noqa: BLE001 - modelscope raises many kinds; all say why
        raise PullError(f"the download of {location} stopped: {error}; run the same "
                        "command again to resume it") from None


def model_name(repo_id: str, filename: str | None) -> str:
    """A GGUF file is called after the file (a repo often holds several quantizations),
    anything else after its repo id, as `vllm serve` calls it."""
    return PurePosixPath(filename).stem if filename else repo_id


def download(repo: str, models_dir: Path, filename: str | None = None,
             revision: str | None = None) -> tuple[Path, dict]:
    """`modelport pull`: the download, and the config entry that serves it (a path that
    names the download the way a config does: `org/repo[/file]` under models_dir, or the
    ModelScope id)."""
    if repo.startswith("modelscope:"):
        from modelport.config.locations import modelscope_id

        repo_id, in_id = modelscope_id(repo)
        filename = filename or in_id
        location = f"modelscope:{repo_id}" + (f":{filename}" if filename else "")
        target = pull_modelscope(location, revision)
        path = location
    else:
        repo_id = repo
        target = pull(repo, models_dir, filename=filename, revision=revision)
        path = f"{repo}/{filename}" if filename else repo
    return target, {"name": model_name(repo_id, filename), "engine": "auto", "path": path}
