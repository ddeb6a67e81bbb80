"""Resolve a model location the way users of the old system wrote it.

Forms accepted: `pkg:PACKAGE/sub/path` (a file shipped inside an installed Python
package), `modelscope:ORG/REPO[:FILE]` (a model already in the local ModelScope cache),
`~/...`, absolute paths, and paths relative to `models_dir` — where `THUDM/chatglm-6b` may
also be found as `models_dir/chatglm-6b`, and `chatglm-6b` as `models_dir/<org>/chatglm-6b`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from modelport.errors import ConfigError

PACKAGE_PREFIX = "pkg:"
MODELSCOPE_PREFIX = "modelscope:"
MODELSCOPE_CACHE_ENV = "MODELSCOPE_CACHE"
DEFAULT_MODELSCOPE_CACHE = "~/.cache/modelscope/hub"


def package_root(package: str) -> Path | None:
    """Folder of an installed package, found without importing (and running) it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    if spec.origin:
        return Path(spec.origin).parent
    return None


def modelscope_id(location: str) -> tuple[str, str | None]:
    """`modelscope:org/repo[:file]` -> ("org/repo", file or None); a ConfigError otherwise."""
    repo, _, file = location[len(MODELSCOPE_PREFIX):].partition(":")
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts) or ".." in parts or (file and ".." in file.split("/")):
        raise ConfigError(f"{location!r} is not a ModelScope id; write it as "
                          "modelscope:org/repo[:file], e.g. modelscope:Qwen/Qwen2.5-0.5B-Instruct")
    return repo, file or None


def modelscope_cache() -> Path:
    return Path(os.path.expanduser(os.environ.get(MODELSCOPE_CACHE_ENV)
                                   or DEFAULT_MODELSCOPE_CACHE))


def _modelscope_candidates(location: str) -> list[Path]:
    """Where the modelscope package keeps a downloaded repo: `models/<org>/<name>` with
    each `.` of the name written `___` (current versions), or `<org>/<name>` (older ones)."""
    repo, file = modelscope_id(location)
    org, name = repo.split("/")
    root = modelscope_cache()
    folders = [root / "models" / org / name.replace(".", "___"), root / "models" / org / name,
               root / org / name.replace(".", "___"), root / org / name]
    unique = list(dict.fromkeys(folders))
    return [folder / file for folder in unique] if file else unique


def candidate_paths(location: str, models_dir: Path) -> list[Path]:
    """Every place `location` may refer to, most specific first."""
    if location.startswith(MODELSCOPE_PREFIX):
        return _modelscope_candidates(location)
    if location.startswith(PACKAGE_PREFIX):
        package, _, inner = location[len(PACKAGE_PREFIX):].partition("/")
        root = package_root(package.replace("-", "_"))
        if root is None:
            return []
        return [root / inner if inner else root]
    expanded = Path(os.path.expanduser(location))
    if expanded.is_absolute():
        return [expanded]
    candidates = [models_dir / expanded]
    if len(expanded.parts) > 1:
        candidates.append(models_dir / expanded.name)
    elif models_dir.is_dir():
        candidates.extend(
            sorted(child / expanded for child in models_dir.iterdir() if child.is_dir())
        )
    candidates.append(Path.cwd() / expanded)
    unique: list[Path] = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return unique


def resolve_location(location: str, models_dir: Path, model_name: str = "") -> Path:
    candidates = candidate_paths(location, models_dir)
    for path in candidates:
        if path.exists():
            return path.resolve()
    label = f"model '{model_name}': " if model_name else ""
    if location.startswith(PACKAGE_PREFIX) and not candidates:
        package = location[len(PACKAGE_PREFIX):].partition("/")[0]
        raise ConfigError(
            f"{label}path {location!r}: Python package '{package}' is not installed "
            f"(pip install {package})"
        )
    tried = "\n".join(f"    {p}" for p in candidates) or "    (none)"
    if location.startswith(MODELSCOPE_PREFIX):
        # Never fetched at start-up: a server that downloads gigabytes when it starts (or
        # hangs without network) is worse than one that says what to run.
        raise ConfigError(
            f"{label}path {location!r} is not in the ModelScope cache ({modelscope_cache()}, "
            f"${MODELSCOPE_CACHE_ENV}) yet; download it first with `modelport pull "
            f"{location}`; looked in:\n{tried}")
    raise ConfigError(f"{label}path {location!r} was not found; tried:\n{tried}")
