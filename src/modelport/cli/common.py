"""What every `modelport` command shares: the error line, the stderr console and how a
command finds the running server."""

from __future__ import annotations

from typing import NoReturn, Optional

import typer
from rich.console import Console
from rich.text import Text

from modelport.errors import ConfigError

console = Console(stderr=True)


def fail(error: Exception) -> NoReturn:
    # The message is printed as plain text: config errors quote YAML, and rich would
    # take `[a` or `[/]` in it for markup and drop or reject it.
    message = Text("error:", style="bold red")
    message.append(f" {error}")
    console.print(message, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def url_option() -> Optional[str]:
    return typer.Option(None, "--url", envvar="MODELPORT_URL",
                        help="The running gateway (default: server.host/port of the config, else "
                             "http://127.0.0.1:8888).")


def gateway_url(url: Optional[str], config: Optional[str]) -> str:
    from modelport.cli.client import resolve_gateway_url

    try:
        return resolve_gateway_url(url, config)
    except ConfigError as error:
        fail(ConfigError(f"{error}\n(the server address comes from the config; "
                          "pass --url or set MODELPORT_URL to skip it)"))
