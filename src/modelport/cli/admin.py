"""`modelport keys …`, `usage`, `load`, `unload` and `reload`: the admin API of a running
server."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Optional

import orjson
import typer
from rich.console import Console

from modelport.cli.common import fail, gateway_url, url_option

keys_app = typer.Typer(no_args_is_help=True, help="Virtual API keys of a running server "
                       "(needs its master key).")


def _config_option() -> Optional[str]:
    return typer.Option(None, "--config", "-c", help="Config whose server to reach.")


def _master_key_option() -> Optional[str]:
    return typer.Option(None, "--master-key", envvar="MODELPORT_MASTER_KEY",
                        help="The server's master key (default: $MODELPORT_MASTER_KEY).")


def _json_option() -> bool:
    return typer.Option(False, "--json", help="Print the server's JSON answer.")


def _client(url: Optional[str], config: Optional[str], master_key: Optional[str]):  # noqa: ANN202
    from modelport.cli.admin_client import AdminClient
    from modelport.errors import ConfigError

    if not master_key:
        fail(ConfigError("the admin API needs the server's master key: pass --master-key "
                          "or set MODELPORT_MASTER_KEY"))
    resolved = gateway_url(url, config)
    return resolved, AdminClient(resolved, master_key)  # type: ignore[arg-type]


def _run(call):  # noqa: ANN001, ANN202
    try:
        return call()
    except ConnectionError as error:
        fail(error)


def _print_json(data: object) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _expiry(text: Optional[str]) -> Optional[str]:
    """30d, 12h … from now, or a time as the server accepts it (ISO 8601)."""
    from modelport.api.admin_bodies import parse_age

    if text is None:
        return None
    age = parse_age(text)
    return (datetime.now(UTC) + age).isoformat() if age is not None else text


def _metadata(pairs: list[str]) -> dict[str, str]:
    from modelport.errors import ConfigError

    metadata = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            fail(ConfigError(f"--meta '{pair}': write NAME=VALUE"))
        metadata[name] = value
    return metadata


@keys_app.command("create")
def create_key(
    name: str = typer.Argument(..., help="Who or what the key is for."),
    model: list[str] = typer.Option(None, "--model", "-m",
                                    help="Allow only this model (repeatable; default: all)."),
    rpm: Optional[int] = typer.Option(None, help="Requests per minute."),
    tpm: Optional[int] = typer.Option(None, help="Tokens per minute."),
    max_parallel: Optional[int] = typer.Option(None, help="Requests in flight at once."),
    budget_tokens: Optional[int] = typer.Option(None, help="Tokens per budget period."),
    budget_period: str = typer.Option("total", help="day, month or total."),
    expires: Optional[str] = typer.Option(None, help="30d, 12h … from now, or an ISO time."),
    meta: list[str] = typer.Option(None, "--meta", help="NAME=VALUE label (repeatable)."),
    priority: Optional[str] = typer.Option(
        None, help="Highest class its requests get in a model's queue: interactive, "
        "standard (default), batch, or 0-100."),
    weight: Optional[float] = typer.Option(
        None, help="Its share of a busy model against keys of weight 1 (default 1)."),
    url: Optional[str] = url_option(),
    config: Optional[str] = _config_option(),
    master_key: Optional[str] = _master_key_option(),
    as_json: bool = _json_option(),
) -> None:
    """Create a key; its secret is printed once and cannot be shown again."""
    metadata: dict = _metadata(meta or [])
    # Kept with the key's labels; the gateway checks them (docs/scheduling.md).
    metadata.update({k: v for k, v in (("priority", priority), ("weight", weight))
                     if v is not None})
    fields = {"name": name, "models": model or None, "rpm": rpm, "tpm": tpm,
              "max_parallel": max_parallel, "budget_tokens": budget_tokens,
              "budget_period": budget_period, "expires_at": _expiry(expires),
              "metadata": metadata}
    _, client = _client(url, config, master_key)
    created = _run(lambda: client.create_key({k: v for k, v in fields.items() if v is not None}))
    if as_json:
        _print_json(created)
        return
    from modelport.cli.tables import key_detail

    out = Console(highlight=False)
    out.print(key_detail(created))
    out.print("secret (shown once, store it now):", style="bold")
    # Printed alone on its line, without markup, so it can be copied or piped as it is.
    print(created["key"])


@keys_app.command("list")
def list_keys(
    url: Optional[str] = url_option(),
    config: Optional[str] = _config_option(),
    master_key: Optional[str] = _master_key_option(),
    as_json: bool = _json_option(),
) -> None:
    """Every key with its models, limits and state (never the secrets)."""
    from modelport.cli.tables import keys_table

    resolved, client = _client(url, config, master_key)
    keys = _run(client.list_keys)
    if as_json:
        _print_json(keys)
    else:
        Console().print(keys_table(resolved, keys))


@keys_app.command("show")
def show_key(
    key_id: str = typer.Argument(..., help="The key's id (key_…)."),
    url: Optional[str] = url_option(),
    config: Optional[str] = _config_option(),
    master_key: Optional[str] = _master_key_option(),
    as_json: bool = _json_option(),
) -> None:
    """One key, with the tokens it used in its budget period."""
    from modelport.cli.tables import key_detail

    _, client = _client(url, config, master_key)
    key = _run(lambda: client.get_key(key_id))
    if as_json:
        _print_json(key)
    else:
        Console().print(key_detail(key))


@keys_app.command("revoke")
def revoke_key(
    key_id: str = typer.Argument(..., help="The key's id (key_…)."),
    url: Optional[str] = url_option(),
    config: Optional[str] = _config_option(),
    master_key: Optional[str] = _master_key_option(),
    as_json: bool = _json_option(),
) -> None:
    """Revoke a key: refused from its next request on."""
    _, client = _client(url, config, master_key)
    key = _run(lambda: client.revoke_key(key_id))
    if as_json:
        _print_json(key)
    else:
        Console(highlight=False).print(f"revoked {key['name']} ({key['id']})", markup=False)


def usage(
    group_by: str = typer.Option("key", "--group-by", "-g", help="key, model or day."),
    since: Optional[str] = typer.Option(None, help="ISO time or date, or an age: 24h, 7d."),
    until: Optional[str] = typer.Option(None, help="ISO time or date, or an age: 1h."),
    url: Optional[str] = url_option(),
    config: Optional[str] = _config_option(),
    master_key: Optional[str] = _master_key_option(),
    as_json: bool = _json_option(),
) -> None:
    """Requests, tokens and cost of a running server, by key, model or day."""
    from modelport.cli.tables import usage_table

    resolved, client = _client(url, config, master_key)
    report = _run(lambda: client.usage(group_by, since, until))
    if as_json:
        _print_json(report)
    else:
        Console().print(usage_table(resolved, report))


def load(
    name: str = typer.Argument(..., help="The model to load (name or alias)."),
    url: Optional[str] = url_option(),
    config: Optional[str] = _config_option(),
    master_key: Optional[str] = _master_key_option(),
    as_json: bool = _json_option(),
) -> None:
    """Load a model on a running server (evicting idle ones if it must), with progress."""
    from concurrent.futures import ThreadPoolExecutor, wait

    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    _, client = _client(url, config, master_key)
    with ThreadPoolExecutor(1) as pool, Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
            transient=True, disable=as_json) as progress:
        # The load answers once the model is ready (or why it is not); meanwhile its state
        # is polled for the progress line.
        loading = pool.submit(client.load_model, name)
        task = progress.add_task(f"loading {name}", total=None)
        while not loading.done():
            try:
                seen = client.model(name)
                progress.update(task, description=f"loading {seen['name']}: {seen['state']}")
            except ConnectionError:
                pass  # the load's own answer says what went wrong
            wait([loading], timeout=0.25)
        state = _run(loading.result)
    if as_json:
        _print_json(state)
        return
    memory = state.get("memory_bytes")
    Console(highlight=False).print(
        f"[green]{state['name']} is loaded[/] (pid {state['pid']}"
        + (f", {memory / 2**20:.0f} MiB" if memory else "") + ")")


def unload(
    name: str = typer.Argument(..., help="The model to unload (name or alias)."),
    url: Optional[str] = url_option(),
    config: Optional[str] = _config_option(),
    master_key: Optional[str] = _master_key_option(),
    as_json: bool = _json_option(),
) -> None:
    """Unload a model on a running server once its requests finish; its memory is freed."""
    _, client = _client(url, config, master_key)
    with Console().status(f"unloading {name} (waiting for its requests to finish)"):
        state = _run(lambda: client.unload_model(name))
    if as_json:
        _print_json(state)
    else:
        Console(highlight=False).print(f"{state['name']} is {state['state']}")


def reload(
    url: Optional[str] = url_option(),
    config: Optional[str] = _config_option(),
    master_key: Optional[str] = _master_key_option(),
    as_json: bool = _json_option(),
) -> None:
    """Make a running server re-read its config file (as SIGHUP does)."""
    _, client = _client(url, config, master_key)
    report = _run(client.reload)
    if as_json:
        _print_json(report)
        return
    out = Console(highlight=False)
    for kind in ("added", "removed", "restarted", "updated"):
        if report[kind]:
            out.print(f"{kind}: {', '.join(report[kind])}")
    if report["needs_restart"]:
        out.print(f"[yellow]applied at the next start only:[/] {', '.join(report['needs_restart'])}")
    out.print(f"[green]reloaded in {report['seconds']:.2f} s[/]")
