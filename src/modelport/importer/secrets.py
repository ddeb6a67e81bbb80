"""Move API keys out of the config: literal keys become `${ENV}` references.

A key written in the old Python file must never reach modelport.yaml (which people
commit and paste into tickets); the user exports it instead, under a name derived from
the model, and the importer lists the variables to set.
"""

from __future__ import annotations

import re

from modelport.importer.pysource import EnvRef

_PLACEHOLDER_KEYS = {"", "empty", "none", "null"}


def is_placeholder_key(value: object) -> bool:
    """Values that mean "no key": local models used "EMPTY", templates left "" or "your ..."."""
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    text = value.strip().lower()
    return text in _PLACEHOLDER_KEYS or text.startswith(("your ", "your_")) or \
        re.fullmatch(r"sk-x+", text) is not None  # the old configs' own stand-in, "sk-xx"


def env_var_name(model_name: str) -> str:
    """`zhipu-api` -> MODELPORT_ZHIPU_API_KEY (the old names end in -api already)."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", model_name).strip("_").upper()
    stem = re.sub(r"_API$", "", stem) or "MODEL"
    return f"MODELPORT_{stem}_API_KEY"


class KeyVault:
    """Hands out `${VAR}` references for keys and remembers what each variable is for."""

    def __init__(self) -> None:
        self.env_vars: dict[str, str] = {}
        self._var_by_secret: dict[str, str] = {}

    def reference(self, model_name: str, value: object, where: str) -> tuple[str, str | None]:
        """The `api_key` to write for `value`, and a warning when the user must act.

        A literal key gets a required `${VAR}`; the same key used by several models
        shares one variable. A key the old file left empty gets `${VAR:-}`, so the
        config still loads and the key can be exported later.
        """
        if isinstance(value, EnvRef):
            return self._from_environment(model_name, value)
        if is_placeholder_key(value):
            var = self._new_var(model_name)
            self.env_vars[var] = f"API key of '{model_name}' (optional: the old config had none)"
            return f"${{{var}:-}}", None
        secret = str(value)
        if secret in self._var_by_secret:
            return f"${{{self._var_by_secret[secret]}}}", None
        var = self._new_var(model_name)
        self._var_by_secret[secret] = var
        self.env_vars[var] = f"API key of '{model_name}', written in {where}"
        return f"${{{var}}}", (
            f"{where}: the API key written there was not copied; "
            f"export {var}=<the key> before starting modelport"
        )

    def _from_environment(self, model_name: str, ref: EnvRef) -> tuple[str, str | None]:
        """The old file read the key from the environment: keep reading the same variable."""
        optional = "" if ref.required else ", optional as before"
        self.env_vars.setdefault(
            ref.var, f"API key of '{model_name}' (the old config read it from here too{optional})"
        )
        warning = None
        if ref.default is not None and not is_placeholder_key(ref.default):
            # the fallback is itself a literal key: it must not be copied either
            warning = (f"model '{model_name}': the fallback key given to os.environ.get"
                       f"('{ref.var}', ...) was not copied; export {ref.var}")
        return EnvRef(ref.var, required=ref.required).as_reference(), warning

    def _new_var(self, model_name: str) -> str:
        base = env_var_name(model_name)
        var, counter = base, 2
        while var in self.env_vars:
            var = f"{base}_{counter}"
            counter += 1
        return var
