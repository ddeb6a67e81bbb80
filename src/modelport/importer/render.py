"""Write the imported config as modelport.yaml text, with the comments a reader needs.

PyYAML cannot write comments, so each part is dumped on its own and the comments
(where an entry came from, the old provider class, the variables to export) are put
around them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modelport.importer.entries import ImportedModel


def render_yaml(server: dict[str, Any], models: list[ImportedModel], sources: list[Path],
                env_vars: dict[str, str], warnings: list[str],
                what: str = "the configuration of the old FastChat-based service") -> str:
    lines = [
        f"# modelport.yaml imported from {what}",
        f"# by `modelport import-config` from: {', '.join(str(p) for p in sources)}",
        "# Relative model paths resolve against server.models_dir, itself relative to the",
        "# folder of this file: keep this file in the old project's folder.",
    ]
    if env_vars:
        lines += ["#", "# Export these environment variables before `modelport serve`:"]
        lines += [f"#   export {var}=...   # {purpose}" for var, purpose in env_vars.items()]
    if warnings:
        lines += ["#", "# Import notes (what did not carry over as it was):"]
        lines += [f"#   - {' '.join(warning.split())}" for warning in warnings]
    lines.append("")
    lines.append(_dump({"server": server}) if server else "server: {}")
    lines.append("models:" if models else "models: []")
    for model in models:
        lines.append("")
        lines += [f"  # {comment}" for comment in model.comments]
        entry_lines = _dump([model.entry]).splitlines()
        lines += [f"  {line}" for line in entry_lines]
    return "\n".join(lines) + "\n"


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True,
                          default_flow_style=False, width=100).rstrip("\n")
