"""Tables of `modelport check` and `modelport models`, kept readable in an 80-column terminal.

Each model is one row whose first cell stacks the name, its aliases and its location, so
only short columns sit beside it and the widest cell (a path) gets most of the width.
All cell text is rich `Text`, never markup: paths and names may contain brackets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text


@dataclass
class CheckRow:
    name: str
    aliases: list[str]
    engine: str
    location: str
    where: str
    load: str | None  # "always", "on_demand", or None: served only when named (--model)
    missing: bool = False  # location is the configured path, which was not found
    tools: bool | None = None  # can call tools; None for models that do not chat


def short_path(path: str, base: Path | None = None) -> str:
    """The path as a reader needs it: relative to the config, ~, or from site-packages."""
    absolute = Path(path)
    if not absolute.is_absolute():
        return path
    for root, label in ((base, ""), (Path.home(), "~/")):
        if root is not None and absolute.is_relative_to(root) and absolute != root:
            return label + str(absolute.relative_to(root))
    # Models shipped as packages live deep in the venv; the package folder is what matters.
    parts = absolute.parts
    if "site-packages" in parts:
        return str(Path(*parts[parts.index("site-packages"):]))
    return path


def _location_lines(location: str) -> Text:
    # Folder and file name on their own lines: a long folder then folds without
    # breaking the file name in two.
    head, sep, tail = location.rpartition("/")
    if sep and head and "://" not in location:
        return Text(head + "/\n" + tail)
    return Text(location)


def check_table(title: str, rows: list[CheckRow], base: Path | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("model / location", overflow="fold")
    table.add_column("engine / worker", overflow="fold")
    for row in rows:
        cell = Text(row.name, style="bold")
        if row.aliases:
            cell.append("\naka " + ", ".join(row.aliases), style="dim")
        cell.append("\n")
        if row.missing:
            cell.append("NOT FOUND ", style="red")
            cell.append(row.location)
        else:
            cell.append_text(_location_lines(short_path(row.location, base)))
        where = Text(f"{row.engine}\n{row.where}")
        if row.tools is not None:
            where.append("\ntools" if row.tools else "\nno tools",
                         style="green" if row.tools else "yellow")
        if row.load is None:
            where.append("\nnot autostarted", style="dim")
        elif row.load == "on_demand":
            where.append("\nloads on demand", style="dim")
        table.add_row(cell, where)
    return table


def models_table(url: str, cards: list[dict], states: dict,
                 devices: dict | None = None) -> RenderableType:
    table = Table(title=f"models at {url}", title_justify="left")
    for column in ("model", "kind", "engine", "status"):
        table.add_column(column, overflow="fold")
    for card in cards:
        live = states.get(card["id"], {})
        cell = Text(card["id"], style="bold")
        if card.get("aliases"):
            cell.append("\naka " + ", ".join(card["aliases"]), style="dim")
        # In-flight and restart counts join the status only when they say something,
        # which keeps the table four columns wide.
        status = [str(live.get("status", card.get("status", "?")))]
        if card.get("load") == "on_demand":
            status.append("on demand")
        if live.get("in_flight"):
            status.append(f"{live['in_flight']} in flight")
        queue = live.get("queue") or {}
        if queue.get("length"):
            status.append(f"{queue['length']} queued (oldest {queue['oldest_wait_s']:.1f}s)")
        if live.get("restarts"):
            status.append(f"{live['restarts']} restarts")
        memory = live.get("memory") or {}
        if memory.get("resident") and any(memory.get("bytes", {}).values()):
            status.append("holds " + _per_device(memory["bytes"]))
        replicas = live.get("replicas") or []
        if len(replicas) > 1:
            status += [_replica_line(replica) for replica in replicas]
        table.add_row(cell, Text(card.get("kind", "?")), Text(card.get("engine", "?")),
                      Text("\n".join(status)))
    memory = _devices_lines(devices or {})
    return Group(table, memory) if memory is not None else table



def _size(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 1024:.0f} KiB"


def _per_device(sizes: dict) -> str:
    return ", ".join(f"{_size(size)} on {device}" for device, size in sizes.items() if size)


def _devices_lines(devices: dict) -> Text | None:
    """Memory per device, under the table (/health's `memory`): what the loaded models
    count there, of its budget."""
    lines = []
    for device, entry in devices.items():
        budget = entry.get("budget_bytes")
        line = f"{device}: {_size(entry.get('used_bytes', 0))} held"
        line += f" of {_size(budget)} (memory_budget)" if budget else " (no budget)"
        if entry.get("models"):
            line += " by " + ", ".join(entry["models"])
        lines.append(line)
    return Text("\n".join(lines)) if lines else None


def _replica_line(replica: dict) -> str:
    """One replica under its model: where it is, its state, and what it has been through."""
    parts = [f"{replica.get('name')} {replica.get('url', '')} {replica.get('state', '?')}"]
    for field, label in (("in_flight", "in flight"), ("restarts", "restarts")):
        if replica.get(field):
            parts.append(f"{replica[field]} {label}")
    if replica.get("last_error"):
        parts.append(f"last error: {replica['last_error']}")
    return " · ".join(parts)


def _limits(key: dict) -> str:
    parts = [f"{key[name]} {label}" for name, label in
             (("rpm", "rpm"), ("tpm", "tpm"), ("max_parallel", "parallel")) if key.get(name)]
    if key.get("budget_tokens"):
        parts.append(f"{key['budget_tokens']:,} tokens/{key.get('budget_period', 'total')}")
    return "\n".join(parts) or "none"


def _key_state(key: dict) -> Text:
    if key.get("revoked"):
        return Text("revoked", style="red")
    if key.get("expired"):
        return Text("expired", style="yellow")
    state = Text("active", style="green")
    if key.get("expires_at"):
        state.append(f"\nuntil {key['expires_at'][:16]}", style="dim")
    return state


def keys_table(url: str, keys: list[dict]) -> Table:
    table = Table(title=f"API keys at {url}", title_justify="left")
    for column in ("key", "models", "limits", "state"):
        table.add_column(column, overflow="fold")
    for key in keys:
        cell = Text(key["name"], style="bold")
        cell.append(f"\n{key['id']}\n{key['key_prefix']}…", style="dim")
        models = ", ".join(key["models"]) if key.get("models") else "all"
        table.add_row(cell, Text(models), Text(_limits(key)), _key_state(key))
    return table


def key_detail(key: dict) -> Table:
    table = Table(title=f"API key {key['name']}", title_justify="left", show_header=False)
    table.add_column("field", style="dim")
    table.add_column("value", overflow="fold")
    rows = [
        ("id", key["id"]), ("prefix", key["key_prefix"] + "…"),
        ("models", ", ".join(key["models"]) if key.get("models") else "all"),
        ("limits", _limits(key)), ("expires", key.get("expires_at") or "never"),
        ("created", key.get("created_at") or "?"),
    ]
    if "tokens_used" in key:
        since = key.get("tokens_used_since")
        used = f"{key['tokens_used']:,}" + (f" since {since[:10]}" if since else " in total")
        if key.get("budget_tokens"):
            used += f" of {key['budget_tokens']:,}"
        rows.append(("tokens used", used))
    if key.get("metadata"):
        rows.append(("metadata", ", ".join(f"{k}={v}" for k, v in key["metadata"].items())))
    for field_name, value in rows:
        table.add_row(field_name, Text(str(value)))
    table.add_row("state", _key_state(key))
    return table


def usage_table(url: str, report: dict) -> Table:
    group_by = report["group_by"]
    window = " ".join(part for part in (
        f"since {report['since'][:16]}" if report.get("since") else "",
        f"until {report['until'][:16]}" if report.get("until") else "") if part)
    table = Table(title=f"usage at {url} by {group_by}" + (f", {window}" if window else ""),
                  title_justify="left")
    table.add_column(group_by, overflow="fold")
    for column in ("requests", "errors", "prompt", "completion", "total", "cost"):
        table.add_column(column, justify="right")
    for row in report["data"]:
        label = Text(str(row[group_by] if row[group_by] is not None else "(no key)"))
        if group_by == "key" and row.get("name"):
            label = Text(row["name"], style="bold")
            label.append(f"\n{row['key']}", style="dim")
        cost = "-" if row.get("cost") is None else f"{row['cost']:.4f}"
        table.add_row(label, f"{row['requests']:,}", f"{row['errors']:,}",
                      f"{row['prompt_tokens']:,}", f"{row['completion_tokens']:,}",
                      f"{row['total_tokens']:,}", cost)
    return table
