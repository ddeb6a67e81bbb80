"""Run the old service's config modules and write their settings as JSON (the child side).

modelport.importer.execute starts this file as a script in a separate Python process,
possibly the old project's own interpreter, so it uses the standard library only.

    python probe.py OUTPUT.json PROJECT_ROOT NAMES_JSON MODULE [MODULE ...]

A module that is not installed (torch, openai, an internal package) is replaced by a
permissive stand-in so that the config computes its dicts as it did on the old machine.
The exception is an import inside a `try:` block: there the old config itself handled the
missing package, so it gets the ImportError it expects and takes its own fallback branch.
Only plain data (dicts, lists, strings, numbers, booleans, None) is written back.
"""

from __future__ import annotations

import dis
import importlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
import traceback
import types

_stand_ins: list[str] = []


class StandIn:
    """Any attribute, call, item or iteration of a missing module: false, empty, inert."""

    def __init__(self, label: str) -> None:
        object.__setattr__(self, "_label", label)

    def __getattr__(self, name: str) -> "StandIn":
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return StandIn(f"{self._label}.{name}")

    def __setattr__(self, name: str, value: object) -> None:
        pass

    def __call__(self, *args: object, **kwargs: object) -> "StandIn":
        return StandIn(f"{self._label}()")

    def __getitem__(self, key: object) -> "StandIn":
        return StandIn(f"{self._label}[{key!r}]")

    def __setitem__(self, key: object, value: object) -> None:
        pass

    def __bool__(self) -> bool:
        return False  # `torch.cuda.is_available()` is false: the config takes its CPU branch

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0

    def __int__(self) -> int:
        return 0

    __index__ = __int__

    def __float__(self) -> float:
        return 0.0

    def __contains__(self, item: object) -> bool:
        return False

    def __enter__(self) -> "StandIn":
        return self

    def __exit__(self, *exc: object) -> bool:
        return False

    def __mro_entries__(self, bases: tuple) -> tuple:
        return (object,)  # `class Worker(missing.Base):` still defines a class

    def __repr__(self) -> str:
        return f"<stand-in {self._label}>"

    __str__ = __repr__


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str) -> StandIn:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return StandIn(f"{self.__name__}.{name}")


class _StandInLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StandInModule(spec.name)
        module.__path__ = []  # a package: `from missing.sub import x` works too
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


class StandInFinder(importlib.abc.MetaPathFinder):
    """Last on sys.meta_path: reached only for modules no real finder has."""

    def __init__(self, root: str) -> None:
        self.root = os.path.join(os.path.abspath(root), "")

    def find_spec(self, fullname: str, path: object, target: object = None):
        importer = _importing_frame(sys._getframe(1))
        # only the old project's own imports: a library probing for an optional module
        # (importlib.util.find_spec, try/except ImportError) must see it missing
        if importer is None or not os.path.abspath(importer.f_code.co_filename).startswith(
                self.root) or _import_is_guarded(importer):
            return None
        if fullname.partition(".")[0] not in _stand_ins:
            _stand_ins.append(fullname.partition(".")[0])
        return importlib.machinery.ModuleSpec(fullname, _StandInLoader(), is_package=True)


def _importing_frame(frame: types.FrameType | None) -> types.FrameType | None:
    """The frame of the code that asked for the import (importlib's own frames skipped)."""
    while frame is not None and (frame.f_globals.get("__name__") or "").startswith("importlib"):
        frame = frame.f_back
    return frame


def _import_is_guarded(frame: types.FrameType) -> bool:
    """Whether the import statement being run sits in a `try:` block with a handler."""
    code = frame.f_code
    try:
        entries = dis.Bytecode(code).exception_entries  # Python 3.11+
    except AttributeError:
        return False
    for entry in entries:
        if entry.start <= frame.f_lasti < entry.end:
            handler = [i.opname for i in dis.get_instructions(code)
                       if entry.target <= i.offset < entry.target + 6]
            # a try's handler starts with PUSH_EXC_INFO; a `with` block's then runs
            # WITH_EXCEPT_START, and code inside an except clause has a cleanup handler
            return handler[:1] == ["PUSH_EXC_INFO"] and "WITH_EXCEPT_START" not in handler
    return False


def plain(value: object, label: str, dropped: list[str]) -> object:
    """`value` as JSON data; anything else is left out and its place reported."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)):
                dropped.append(f"{label}[{key!r}]: a {type(key).__name__} key")
                continue
            converted = plain(item, f"{label}[{key!r}]", dropped)
            if converted is not _DROPPED:
                result[str(key)] = converted
        return result
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [plain(item, f"{label}[{i}]", dropped) for i, item in enumerate(value)]
        return [item for item in items if item is not _DROPPED]
    dropped.append(f"{label}: {value!r}" if isinstance(value, StandIn)
                   else f"{label}: a {type(value).__name__}")
    return _DROPPED


_DROPPED = object()


def collect(module_names: list[str], names: list[str]) -> dict:
    modules = {}
    for module_name in module_names:
        module = importlib.import_module(module_name)
        values, dropped = {}, []
        for name in names:
            if hasattr(module, name):
                value = plain(getattr(module, name), name, dropped)
                if value is not _DROPPED:
                    values[name] = value
        modules[module_name] = {"file": getattr(module, "__file__", None), "values": values,
                                "dropped": dropped}
    return modules


def main(argv: list[str]) -> int:
    output, root, names_json, *module_names = argv
    sys.path.insert(0, root)
    sys.meta_path.append(StandInFinder(root))
    try:
        result = {"modules": collect(module_names, json.loads(names_json))}
    except BaseException as error:  # noqa: BLE001 - the old config may raise anything
        last = traceback.format_exception_only(type(error), error)[-1].strip()
        result = {"error": last, "traceback": traceback.format_exc()}
    result["stand_ins"] = _stand_ins
    with open(output, "w", encoding="utf-8") as file:
        json.dump(result, file)
    return 0 if "modules" in result else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
