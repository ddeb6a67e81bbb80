"""Read the module-level values of a Python config file without executing it.

The old system's configs are Python modules that import torch, call functions and
branch on the platform. Running them would need their whole environment (and would run
whatever they contain), so we walk the syntax tree instead and evaluate only what is
literal or derived from literals: constants, containers, names assigned earlier,
string concatenation and f-strings, `os.path` joins, `Path(...) / ...` and
`os.environ.get(...)` (kept as an environment reference). Everything else is reported,
by line, and left out.
"""

from __future__ import annotations

import ast
import posixpath
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any


@dataclass(frozen=True)
class EnvRef:
    """`os.environ.get("VAR", default)` in the old file: the value lives in the environment.

    `required` is `os.environ["VAR"]`, which failed when VAR was unset; `.get` did not.
    """

    var: str
    default: str | None = None
    required: bool = False

    def as_reference(self) -> str:
        """The same lookup in modelport.yaml's `${VAR}` syntax."""
        if self.required:
            return f"${{{self.var}}}"
        return f"${{{self.var}:-{self.default or ''}}}"


class NotEvaluable(Exception):
    """An expression that is not a literal; `reason` says why, for the warning."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class ModuleValues:
    """What could be read from one file: values by name, where they were set, and warnings."""

    file: Path
    values: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # name -> line it failed at
    item_lines: dict[str, int] = field(default_factory=dict)  # "NAME['key']" -> line
    warnings: list[str] = field(default_factory=list)
    # "NAME['key']" -> os.environ lookup written there, kept even if NAME is later lost
    env_refs: dict[str, EnvRef] = field(default_factory=dict)

    def where(self, name: str) -> str:
        line = self.lines.get(name, self.skipped.get(name))
        return f"{self.file.name} line {line}" if line else self.file.name

    def locate(self, name: str, *keys: Any) -> str:
        """`model_config.py line 85: ONLINE_LLM_MODEL['qianfan-api']`, for messages."""
        label = name + "".join(f"[{key!r}]" for key in keys)
        line = self.item_lines.get(label) or self.lines.get(name) or self.skipped.get(name)
        return f"{self.file.name} line {line}: {label}" if line else f"{self.file.name}: {label}"


_OS_PATH_FUNCTIONS = {"os.path.join", "os.path.dirname", "os.path.basename",
                      "os.path.expanduser", "os.path.abspath", "os.path.normpath"}
_ENV_FUNCTIONS = {"os.environ.get", "os.getenv"}
_PATH_CONSTRUCTORS = {"Path", "pathlib.Path", "PurePath", "pathlib.PurePath"}
_PATH_METHODS = {"resolve", "absolute", "expanduser"}
_SNIPPET_CHARS = 60


def read_python_config(path: Path, imported: ModuleValues | None = None) -> ModuleValues:
    """Evaluate the literal module-level assignments of `path`.

    `imported` is a config read before (model_config.py for server_config.py): its
    names are visible here, as `from configs.model_config import ...` made them.
    """
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    result = ModuleValues(file=path)
    reader = _Reader(source, result, imported)
    for statement in tree.body:
        reader.statement(statement)
    result.values = {k: _plain(v) for k, v in result.values.items() if k != "__file__"}
    return result


def _plain(value: Any) -> Any:
    """Paths become strings once evaluation is over; containers are converted deeply."""
    if isinstance(value, PurePosixPath):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _dotted_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


class _Reader:
    def __init__(self, source: str, result: ModuleValues, imported: ModuleValues | None):
        self.source = source
        self.result = result
        self.imported = imported
        self.scope: dict[str, Any] = dict(imported.values) if imported else {}
        self.scope["__file__"] = str(result.file.resolve())

    # -- statements -------------------------------------------------------------------

    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                self.assign(target, node.value, node.lineno)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            self.assign(node.target, node.value, node.lineno)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            combined = ast.BinOp(left=ast.Name(id=node.target.id, ctx=ast.Load()),
                                 op=node.op, right=node.value)
            ast.copy_location(combined, node.value)
            self.assign(node.target, combined, node.lineno, snippet_node=node.value)
        elif isinstance(node, (ast.If, ast.Try, ast.For, ast.While, ast.With)):
            self.skip_block(node)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            self.warn_mutating_call(node.value)
        # imports, function and class definitions and docstrings define nothing we need:
        # names imported from the other config file are already in scope.

    def assign(self, target: ast.expr, value: ast.expr, line: int,
               snippet_node: ast.expr | None = None) -> None:
        label = ast.unparse(target)
        if isinstance(target, ast.Name):
            try:
                evaluated = self.evaluate(value, label)
            except NotEvaluable as error:
                self.skip(label, snippet_node or value, line, error.reason)
                return
            self.scope[target.id] = evaluated
            self.result.values[target.id] = evaluated
            self.result.lines[target.id] = line
            self.result.skipped.pop(target.id, None)
        elif isinstance(target, ast.Subscript):
            self.assign_item(target, value, line, label)
        else:
            self.warn(line, f"{label} = {self.snippet(value)}: only plain names are read, skipped")

    def assign_item(self, target: ast.Subscript, value: ast.expr, line: int, label: str) -> None:
        """`llm_model_dict["x"] = {...}` after the dict literal: update the known dict."""
        try:
            container = self.evaluate(target.value, label)
            key = self.evaluate(target.slice, label)
            evaluated = self.evaluate(value, label)
        except NotEvaluable as error:
            self.skip(label, value, line, error.reason)
            return
        if not isinstance(container, dict):
            self.warn(line, f"{label} = {self.snippet(value)}: not a dict item, skipped")
            return
        container[key] = evaluated

    def skip_block(self, node: ast.stmt) -> None:
        """Names set under if/try/for/with depend on run-time state; say which were missed."""
        kind = type(node).__name__.lower()
        for inner in ast.walk(node):
            if isinstance(inner, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = inner.targets if isinstance(inner, ast.Assign) else [inner.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        self.warn(inner.lineno, f"{target.id} is set inside the `{kind}` block "
                                                f"of line {node.lineno}, which is not "
                                                "evaluated; skipped")
                        self.forget(target.id, inner.lineno)

    def warn_mutating_call(self, call: ast.Call) -> None:
        """`llm_model_dict.update(...)` changes a config value in a way we do not follow."""
        if isinstance(call.func, ast.Attribute):
            owner = _dotted_name(call.func.value)
            if owner in self.result.values:
                self.warn(call.lineno, f"{self.snippet(call)}: a call that may change {owner} "
                                       "is not evaluated; skipped")

    def skip(self, label: str, value: ast.expr, line: int, reason: str) -> None:
        self.warn(line, f"{label} = {self.snippet(value)}: {reason}, skipped")
        if "[" not in label:
            self.forget(label, line)

    def forget(self, name: str, line: int) -> None:
        """The name's value is unknown from here on, even if an earlier line set it."""
        self.scope.pop(name, None)
        self.result.values.pop(name, None)
        self.result.lines.pop(name, None)
        self.result.skipped[name] = line

    def warn(self, line: int, message: str) -> None:
        self.result.warnings.append(f"{self.result.file.name} line {line}: {message}")

    def snippet(self, node: ast.expr) -> str:
        text = ast.get_source_segment(self.source, node) or ast.unparse(node)
        text = " ".join(text.split())
        return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 3] + "..."

    # -- expressions ------------------------------------------------------------------

    def evaluate(self, node: ast.expr, label: str) -> Any:
        """The value of `node`; containers keep the items that evaluate and warn for the rest."""
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Dict):
            return self.evaluate_dict(node, label)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return self.evaluate_items(node, label)
        if isinstance(node, ast.Name):
            return self.lookup(node.id)
        if isinstance(node, ast.JoinedStr):
            return "".join(self.format_part(part, label) for part in node.values)
        if isinstance(node, ast.BinOp):
            return self.binary(node, label)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.evaluate(node.operand, label)
            if isinstance(operand, (int, float)) and not isinstance(operand, bool):
                return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.Subscript):
            return self.subscript(node, label)
        if isinstance(node, ast.Call):
            return self.call(node, label)
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            base = self.evaluate(node.value, label)
            if isinstance(base, PurePosixPath):
                return base.parent
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            return self.first_set(node, label)
        if isinstance(node, ast.IfExp):
            # `"0.0.0.0" if sys.platform != "win32" else ...`: the test needs run-time state
            raise NotEvaluable("a conditional expression depends on run-time state")
        raise NotEvaluable("not a literal")

    def evaluate_dict(self, node: ast.Dict, label: str) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in zip(node.keys, node.values):
            if key_node is None:  # {**other, ...}
                merged = self.evaluate(value_node, label)
                if not isinstance(merged, dict):
                    raise NotEvaluable("`**` of something that is not a dict")
                result.update(merged)
                continue
            try:
                key = self.evaluate(key_node, label)
            except NotEvaluable as error:
                self.warn(key_node.lineno, f"{label}[{self.snippet(key_node)}]: key "
                                           f"{error.reason}, entry skipped")
                continue
            item_label = f"{label}[{key!r}]"
            self.result.item_lines[item_label] = key_node.lineno
            try:
                result[key] = self.evaluate(value_node, item_label)
                if isinstance(result[key], EnvRef):
                    self.result.env_refs[item_label] = result[key]
            except NotEvaluable as error:
                self.warn(value_node.lineno,
                          f"{item_label} = {self.snippet(value_node)}: {error.reason}, skipped")
        return result

    def first_set(self, node: ast.BoolOp, label: str) -> Any:
        """`X = X or local_config.get("X") or {...}`: the overrides cannot be known without
        running the file, so the first value that can be read is taken, as if none were set."""
        unknown = []
        for operand in node.values:
            try:
                value = self.evaluate(operand, label)
            except NotEvaluable:
                unknown.append(self.snippet(operand))
                continue
            if value or operand is node.values[-1]:
                if unknown:
                    self.warn(node.lineno, f"{label}: {' or '.join(unknown)} taken as unset")
                return value
        raise NotEvaluable("none of the `or` alternatives is a literal")

    def evaluate_items(self, node: ast.List | ast.Tuple | ast.Set, label: str) -> list[Any]:
        items = []
        for index, element in enumerate(node.elts):
            try:
                items.append(self.evaluate(element, f"{label}[{index}]"))
            except NotEvaluable as error:
                self.warn(element.lineno, f"{label}[{index}] = {self.snippet(element)}: "
                                          f"{error.reason}, skipped")
        return items

    def lookup(self, name: str) -> Any:
        if name in self.scope:
            return self.scope[name]
        for values in (self.result, self.imported):
            if values is not None and name in values.skipped:
                raise NotEvaluable(f"{name} could not be read ({values.where(name)})")
        raise NotEvaluable(f"{name} is not defined by a literal in the config files")

    def format_part(self, part: ast.expr, label: str) -> str:
        if isinstance(part, ast.Constant):
            return str(part.value)
        if isinstance(part, ast.FormattedValue) and part.format_spec is None:
            value = self.evaluate(part.value, label)
            if isinstance(value, (str, int, float, PurePosixPath)) and part.conversion in (-1, 115):
                return str(value)
        raise NotEvaluable("an f-string part that is not a known string or number")

    def binary(self, node: ast.BinOp, label: str) -> Any:
        left = self.evaluate(node.left, label)
        right = self.evaluate(node.right, label)
        if isinstance(node.op, ast.Div) and isinstance(left, PurePosixPath) \
                and isinstance(right, (str, PurePosixPath)):
            return left / right
        if isinstance(node.op, ast.Add):
            for kinds in ((str,), (list,), (int, float)):
                if isinstance(left, kinds) and isinstance(right, kinds):
                    return left + right
        raise NotEvaluable("an operation on values that are not plain literals")

    def subscript(self, node: ast.Subscript, label: str) -> Any:
        if _dotted_name(node.value) == "os.environ":
            return EnvRef(self.env_name(node.slice, label), required=True)
        container = self.evaluate(node.value, label)
        key = self.evaluate(node.slice, label)
        try:
            return container[key]
        except (KeyError, IndexError, TypeError):
            raise NotEvaluable(f"{ast.unparse(node)} does not exist") from None

    def call(self, node: ast.Call, label: str) -> Any:
        name = _dotted_name(node.func)
        if node.keywords:
            raise NotEvaluable("not a literal")
        if isinstance(node.func, ast.Attribute) and not node.args \
                and node.func.attr in _PATH_METHODS:
            # Path(__file__).resolve(): __file__ is already absolute, so nothing changes
            base = self.evaluate(node.func.value, label)
            if isinstance(base, PurePosixPath) and (base.is_absolute() or
                                                   node.func.attr == "expanduser"):
                return base
        if name in _ENV_FUNCTIONS and 1 <= len(node.args) <= 2:
            default = self.evaluate(node.args[1], label) if len(node.args) == 2 else None
            if default is not None and not isinstance(default, str):
                default = str(default)
            return EnvRef(self.env_name(node.args[0], label), default)
        if name in _OS_PATH_FUNCTIONS:
            args = [self.path_text(arg, label) for arg in node.args]
            return _os_path(name, args)
        if name in _PATH_CONSTRUCTORS:
            return PurePosixPath(*(self.path_text(arg, label) for arg in node.args))
        if name == "str" and len(node.args) == 1:
            value = self.evaluate(node.args[0], label)
            if isinstance(value, (str, int, float, PurePosixPath)):
                return str(value)
        raise NotEvaluable("not a literal")

    def env_name(self, node: ast.expr, label: str) -> str:
        var = self.evaluate(node, label)
        if not isinstance(var, str):
            raise NotEvaluable("an environment variable name that is not a string")
        return var

    def path_text(self, node: ast.expr, label: str) -> str:
        value = self.evaluate(node, label)
        if isinstance(value, (str, PurePosixPath)):
            return str(value)
        raise NotEvaluable("a path part that is not a string")


def _os_path(function: str, args: list[str]) -> str:
    if function == "os.path.join" and args:
        return posixpath.join(*args)
    if len(args) != 1:
        raise NotEvaluable("not a literal")
    (arg,) = args
    if function == "os.path.dirname":
        return posixpath.dirname(arg)
    if function == "os.path.basename":
        return posixpath.basename(arg)
    if function == "os.path.expanduser":
        return arg  # keep `~`: modelport expands it on the machine that serves
    if function == "os.path.abspath" and posixpath.isabs(arg):
        return posixpath.normpath(arg)
    if function == "os.path.normpath":
        return posixpath.normpath(arg)
    raise NotEvaluable("a path that depends on the current directory")
