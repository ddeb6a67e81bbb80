"""Run the old `configs` package in a separate, time-limited Python process (see probe.py).

The old service imported its config modules from its project folder, with the user's
environment; so does this, so that environment JSON overrides, `configs/local_config.json`
and path-rewriting loops give the values the old service really used. Only plain data
comes back. Anything that goes wrong is a RunFailed with the reason, and the caller falls
back to reading the files without running them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelport.importer.pysource import EnvRef, ModuleValues

DEFAULT_TIMEOUT_S = 60.0
_PROBE = Path(__file__).with_name("probe.py")


class RunFailed(Exception):
    """Running the old config did not give its values; `reason` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class OldLayout:
    """Where the old config modules are and how the old service imported them."""

    root: Path  # the old project's folder: on sys.path and the working directory
    files: list[Path]  # model_config.py first, then server_config.py
    modules: list[str]  # the same files as module names (configs.model_config ...)


@dataclass
class RunResult:
    modules: list[ModuleValues]  # in the order of OldLayout.files
    stand_ins: list[str] = field(default_factory=list)  # missing modules that were stood in
    notes: list[str] = field(default_factory=list)


def old_layout(files: list[Path]) -> OldLayout:
    """`configs/model_config.py` is module `configs.model_config` of the project folder
    above `configs/`; a file in a folder that is not a package name runs on its own."""
    folder = files[0].resolve().parent
    if folder.name.isidentifier():
        return OldLayout(folder.parent, files, [f"{folder.name}.{f.stem}" for f in files])
    return OldLayout(folder, files, [f.stem for f in files])


def run_old_config(layout: OldLayout, names: list[str], timeout: float = DEFAULT_TIMEOUT_S,
                   python: str | None = None) -> RunResult:
    """Import `layout.modules` in a child process and read `names` from each of them."""
    with tempfile.TemporaryDirectory(prefix="modelport-import-") as scratch:
        output = Path(scratch) / "values.json"
        # `-c` puts the working directory (the project folder) first on sys.path, as
        # running the old service from its folder did, and not modelport's own modules
        command = [python or sys.executable, "-c", _PROBE.read_text(encoding="utf-8"),
                   str(output), str(layout.root), json.dumps(names), *layout.modules]
        try:
            process = subprocess.Popen(command, cwd=layout.root, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as error:
            raise RunFailed(f"cannot start {command[0]}: {error.strerror or error}") from None
        try:
            printed, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise RunFailed(f"it did not finish within {timeout:g} s (--timeout)") from None
        if not output.exists():
            tail = printed.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise RunFailed(f"the Python process exited with {process.returncode}: {tail[0]}")
        data = json.loads(output.read_text(encoding="utf-8"))
    if "error" in data:
        raise RunFailed(data["error"])
    return _result(layout, data)


def _kill_group(process: subprocess.Popen) -> None:
    """The config may have started processes of its own: stop the whole session."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate()


def _result(layout: OldLayout, data: dict[str, Any]) -> RunResult:
    result = RunResult([], list(data.get("stand_ins", [])))
    for path, module in zip(layout.files, layout.modules):
        found = data["modules"][module]
        result.modules.append(ModuleValues(file=path, values=found["values"]))
        result.notes += [f"{path.name}: {item} is not plain data; left out"
                         for item in found["dropped"]]
    if result.stand_ins:
        result.notes.append(
            "not installed for the import, so stood in while the config ran: "
            + ", ".join(result.stand_ins) + " (values computed from them, such as a "
            "torch device check, took the branch for a machine without them)")
    return result


def restore_env_refs(values: dict[str, Any], refs: dict[str, EnvRef],
                     environ: dict[str, str]) -> dict[str, Any]:
    """Where the file says `os.environ.get("VAR")` (`refs`, by place) and the run got
    VAR's value from the user's environment, or nothing with VAR unset, keep the
    reference: the YAML then reads the same variable and a key never lands in it. A
    value the config computed itself (a literal, local_config.json) stays as it ran."""
    return {name: _restore(value, name, refs, environ) for name, value in values.items()}


def _restore(value: Any, label: str, refs: dict[str, EnvRef], environ: dict[str, str]) -> Any:
    ref = refs.get(label)
    if ref is not None and value == environ.get(ref.var, ref.default):
        return ref
    if isinstance(value, dict):
        return {key: _restore(item, f"{label}[{key!r}]", refs, environ)
                for key, item in value.items()}
    return value
