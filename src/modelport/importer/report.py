"""What `modelport import-config` prints: a table of what each old entry became, the
notes on what did not carry over, and the variables to export."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from modelport.importer.result import ImportResult
from modelport.importer.entries import became


def mapping_table(result: ImportResult) -> Table:
    table = Table(title=f"import-config: {result.how}", title_justify="left",
                  show_lines=False, expand=False)
    table.add_column("old entry", overflow="fold")
    table.add_column("became", overflow="fold")
    for model in result.models:
        old = "\n".join([model.origin, *(f"+ {also}" for also in model.also)])
        table.add_row(escape(old), escape(became(model)))
    for skipped in result.skipped:
        table.add_row(escape(skipped.origin), escape(f"nothing: {skipped.reason}"),
                      style="yellow")
    return table


def print_report(result: ImportResult, out: Console, err: Console) -> None:
    out.print(mapping_table(result))
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if result.env_vars:
        out.print("API keys and URLs were moved out of the file; set these variables:",
                  highlight=False)
        for name, purpose in result.env_vars.items():
            out.print(f"  export {name}=...   # {purpose}", highlight=False, markup=False)
