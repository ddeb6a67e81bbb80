"""${VAR} and ${VAR:-default} in config values, and the variables found unset."""

from __future__ import annotations

import os
import re
from typing import Any, NamedTuple

from modelport.errors import ConfigError

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class UnsetVariable(NamedTuple):
    loc: tuple[str | int, ...]  # where the reference is, e.g. ("models", 3, "api_key")
    var: str

    def message(self) -> str:
        where = ".".join(str(part) for part in self.loc) or "config"
        return (f"{where}: environment variable {self.var} is not set; export "
                f"{self.var}=... before starting, or write ${{{self.var}:-default}}")


def interpolate_env(value: Any, unset: list[UnsetVariable] | None = None,
                    loc: tuple[str | int, ...] = ()) -> Any:
    """Replace ${VAR} (or ${VAR:-default}) in every string.

    An unset VAR is a ConfigError, unless `unset` is given: then the reference is left as
    written and recorded there, so that only the models that start need their secrets.
    """
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            var, default = match.group(1), match.group(2)
            if var in os.environ:
                return os.environ[var]
            if default is not None:
                return default
            if unset is None:
                raise ConfigError(UnsetVariable(loc, var).message())
            unset.append(UnsetVariable(loc, var))
            return match.group(0)

        return _ENV_PATTERN.sub(replace, value)
    if isinstance(value, dict):
        return {k: interpolate_env(v, unset, (*loc, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_env(v, unset, (*loc, i)) for i, v in enumerate(value)]
    return value
