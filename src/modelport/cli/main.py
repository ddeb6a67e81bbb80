"""The `modelport` command: serve | worker | check | models | chat | import-config | pull |
keys | usage | load | unload | reload."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.text import Text

from modelport.cli.common import console, fail, gateway_url, url_option
from modelport.errors import ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Self-hosted OpenAI-compatible server for local and online models.")

ConfigOption = typer.Option(None, "--config", "-c", help="Path to modelport.yaml "
                            "(default: $MODELPORT_CONFIG, ./modelport.yaml, else built-in models).")


def _setup_logging(level: str, with_pid: bool = False) -> None:
    # With several gateway processes each line names the process that wrote it.
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s " + ("[%(process)d] " if with_pid else "")
        + "%(name)s: %(message)s",
        datefmt="%H:%M:%S", stream=sys.stderr, force=True,
    )


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        Console(highlight=False).print(f"modelport {version('modelport')}", markup=False)
        raise typer.Exit()


@app.callback()
def _main(
    show_version: bool = typer.Option(False, "--version", callback=_show_version,
                                      is_eager=True, help="Print the version and exit."),
) -> None:
    """Self-hosted OpenAI-compatible server for local and online models."""


@app.command()
def serve(
    config: Optional[str] = ConfigOption,
    model: list[str] = typer.Option(
        None, "--model", "-m", help="Serve only this model (repeatable): a configured name, "
        "or a .gguf file, a checkpoint folder, a Hugging Face id (org/repo[:file]) or "
        "modelscope:org/repo[:file] to serve it with no config file."),
    host: Optional[str] = typer.Option(None, help="Override server.host."),
    port: Optional[int] = typer.Option(None, help="Override server.port."),
    allow_public: bool = typer.Option(False, "--allow-public",
                                      help="Allow a non-loopback host without API keys."),
    log_level: str = typer.Option("info", help="debug shows worker output and request bodies."),
    api_key: list[str] = typer.Option(
        None, "--api-key", help="Require this bearer key on /v1 (repeatable; MODELPORT_API_KEY "
                                "adds one more), besides any server.api_keys of the config."),
    master_key: Optional[str] = typer.Option(
        None, "--master-key", envvar="MODELPORT_MASTER_KEY", show_envvar=True,
        help="Unlock the admin API (/admin) with this key; overrides server.master_key."),
) -> None:
    """Start the gateway and a worker for each local model."""
    from modelport.api.app import build_app
    from modelport.api.serving import run_gateway
    from modelport.config import Config, config_from_text, read_config_text
    from modelport.config.defaults import config_file, default_config
    from modelport.gateway.build import build_state, validate_startup
    from modelport.processes.wire import CONTROL_URL_ENV, PROCESS_INDEX_ENV
    from modelport.gateway.reload import ConfigReloader
    from modelport.cli.quick_model import add_located_models

    _setup_logging(log_level)
    source = config_file(config)
    # Set by the primary in the environment of the other gateway processes it starts; it
    # hands them the config text it runs on their stdin (the file may have changed since).
    follower = bool(os.environ.get(CONTROL_URL_ENV))
    primary_text = sys.stdin.read() if follower and source is not None else None
    last_read: list[str] = []
    selected: list[str] = []  # the --model values as model names (locations become models)

    def read_config() -> Config:
        """The config file with this command line's overrides (again on each reload)."""
        if source is None:
            cfg = default_config()
        else:
            text = primary_text if primary_text is not None else read_config_text(source)
            last_read[:] = [text]
            cfg = config_from_text(text, source)
        if host:
            cfg.server.host = host
        if port:
            cfg.server.port = port
        _add_quick_keys(cfg, api_key)
        selected[:] = add_located_models(cfg, model or [])
        if master_key:
            cfg.server.master_key = master_key
        return cfg

    try:
        cfg = read_config()
        if follower:  # the primary has checked everything
            state = build_state(cfg, selected or None)
        else:
            report = validate_startup(cfg, selected or None, allow_public)
            if report.problems:
                raise ConfigError("\n".join(report.problems))
            state = report.state
    except ConfigError as error:
        fail(error)
        return
    assert state is not None  # validate_startup builds it when nothing is wrong
    processes, _why = cfg.server.process_count()
    if processes > 1:
        _setup_logging(log_level, with_pid=True)
    if follower:
        from modelport.processes.follower import control_from_environment, follow_primary

        follow_primary(state, control_from_environment())
    elif source is not None:
        state.reloader = ConfigReloader(state, read_config, selected or None)
    if not follower and processes > 1:
        from modelport.processes.primary import GatewayProcesses

        state.processes = GatewayProcesses(state, processes, sys.argv[1:],
                                           lambda: last_read[0] if last_read else "")
    names = ", ".join(d.name for d in state.registry)
    logging.getLogger("modelport").info(
        "serving %s on http://%s:%d/v1%s", names, cfg.server.host, cfg.server.port,
        "" if processes == 1 else f" (gateway process {os.environ.get(PROCESS_INDEX_ENV, 0)} "
        f"of {processes})")
    if not follower:
        from modelport.cli.startup_notes import startup_notes

        for level, note in startup_notes(cfg):
            logging.getLogger("modelport").log(level, "%s", note)
    if not run_gateway(build_app(state), cfg.server.host, cfg.server.port, state.in_flight,
                       cfg.server.drain_timeout_s,
                       on_hangup=state.reloader.on_signal if state.reloader else None,
                       shared_port=processes > 1,
                       on_stop_signal=state.processes.forward if state.processes else None):
        raise typer.Exit(3)


def _add_quick_keys(cfg, flags: list[str] | None) -> None:  # noqa: ANN001 (Config)
    """Keys given on the command line or in MODELPORT_API_KEY, so the built-in config (or
    any config) can be protected without writing a file."""
    keys = list(flags or [])
    from_env = os.environ.get("MODELPORT_API_KEY", "")
    if from_env.strip():
        keys.append(from_env)
    for key in keys:
        if not key.strip():
            raise ConfigError("--api-key is empty; give the key itself")
        if key.strip() not in cfg.server.api_keys:
            cfg.server.api_keys.append(key.strip())


@app.command()
def worker(
    name: str = typer.Argument(..., help="Model name from the config."),
    config: Optional[str] = ConfigOption,
    host: Optional[str] = typer.Option(None, help="Bind address (default: the model's host)."),
    port: Optional[int] = typer.Option(None, help="Port (default: the model's port)."),
    register: Optional[str] = typer.Option(
        None, envvar="MODELPORT_REGISTER", show_envvar=False,
        help="Announce this worker in Redis (redis://HOST:PORT/DB) for every gateway with "
             "that server.redis_url; needs --advertise."),
    advertise: Optional[str] = typer.Option(
        None, help="The URL gateways reach this worker at, e.g. http://10.0.0.5:8001/v1."),
    register_ttl: float = typer.Option(
        10.0, min=1.0, help="Seconds a registration outlives the worker's last heartbeat."),
) -> None:
    """Run one model's OpenAI-compatible worker in the foreground."""
    from modelport.config import parse_config
    from modelport.config.defaults import find_config
    from modelport.workers.runner import WORKER_SPEC_ENV, run_worker

    _setup_logging("info")
    try:
        spec = os.environ.get(WORKER_SPEC_ENV)
        if spec and not config:
            import orjson

            data = orjson.loads(spec)
            cfg = parse_config({"server": data["server"], "models": data["models"]},
                               "worker spec", base_dir=data["base_dir"])
        else:
            cfg = find_config(config)
        if register and not advertise:
            raise ConfigError("--register needs --advertise http://HOST:PORT/v1: the address "
                              "gateways reach this worker at")
        run_worker(cfg, name, host, port,
                   registration=(register, advertise, register_ttl) if register else None)
    except ConfigError as error:
        fail(error)


@app.command()
def check(
    config: Optional[str] = ConfigOption,
    model: list[str] = typer.Option(
        None, "--model", "-m", help="Check as `serve --model NAME|LOCATION` would (repeatable; "
        "nothing is downloaded)."),
    allow_public: bool = typer.Option(False, "--allow-public",
                                      help="As `serve --allow-public`."),
) -> None:
    """Run every start-up check of `serve` (all problems at once) and show each model's
    engine, resolved location and port."""
    from rich.markup import escape

    from modelport.cli.tables import CheckRow, check_table
    from modelport.config import EMBEDDING_ENGINES, OpenAIUpstreamModel, load_policy
    from modelport.config.cpus import usable_cpus
    from modelport.config.defaults import find_config
    from modelport.engines.embedding_plan import encoder_choice
    from modelport.engines.transformers_batch_plan import folder_batch_support
    from modelport.gateway.build import validate_startup
    from modelport.config.locations import resolve_location
    from modelport.tools.support import tool_support

    from modelport.cli.quick_model import add_located_models

    try:
        cfg = find_config(config)
        selected = add_located_models(cfg, model or [], download=False)
    except ConfigError as error:
        fail(error)
        return
    report = validate_startup(cfg, selected or None, allow_public)
    rows: list[CheckRow] = []
    tool_notes: list[str] = []
    batch_notes: list[str] = []  # how each transformers model serves concurrent requests
    encoder_notes: list[str] = []  # what encodes each embedding model's texts
    for entry in cfg.models:
        missing = False
        if isinstance(entry, OpenAIUpstreamModel) and getattr(entry, "provider", None):
            location, where = f"plugin {entry.provider}", "in gateway"
        elif isinstance(entry, OpenAIUpstreamModel):
            location = f"{entry.base_url} ({entry.upstream_model or entry.name})"
            where = "online"
        else:
            try:
                location = str(resolve_location(entry.path, cfg.models_dir_path(), entry.name))
            except ConfigError:
                location, missing = entry.path, True
            where = f"{entry.host}:{entry.port or 'auto'}"
            if entry.replicas != 1:
                where += f", {entry.replicas} replicas"
            if getattr(entry, "gpus", None):
                where += "\ngpus " + " | ".join(  # what each replica sees
                    str(entry.replica_gpus(i)) for i in range(entry.replicas))
        where += "".join(f"\n+ {deployment.url}" for deployment in entry.deployments)
        support = None if missing or entry.engine in EMBEDDING_ENGINES else \
            tool_support(entry, cfg.models_dir_path())
        if support is not None and not support.can_call_tools:
            tool_notes.append(f"model '{entry.name}' cannot call tools: {support.reason}")
        if entry.engine == "transformers" and not missing:
            batch_notes.append(folder_batch_support(entry, Path(location)).describe(
                entry.name, entry.parallel))
        if entry.engine in EMBEDDING_ENGINES and not missing:
            encoder_notes.append(encoder_choice(Path(location)).describe(entry.name))
        rows.append(CheckRow(entry.name, list(entry.aliases), entry.engine, location, where,
                             load_policy(entry), missing,
                             tools=None if support is None else support.can_call_tools))
    Console().print(check_table(f"modelport: {len(cfg.models)} model(s), gateway "
                                f"http://{cfg.server.host}:{cfg.server.port}/v1", rows,
                                Path(cfg.base_dir)))
    if cfg.server.api_keys:
        Console().print(f"API keys: {len(cfg.server.api_keys)} configured (values hidden)")
    for note in tool_notes:  # not a problem: such a model serves everything but tools
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    for note in batch_notes:
        Console().print(note, markup=False, highlight=False, soft_wrap=True)
    for note in encoder_notes:  # wrapped: the default config has one, read at any width
        Console().print(note, markup=False, highlight=False)
    from modelport.store.database import database_url, redacted

    url = redacted(database_url(cfg))
    where = url.split(":///", 1)[1] + " (SQLite)" if url.startswith("sqlite") else url
    Console().print(f"keys and usage: {where}", markup=False, highlight=False)
    Console().print("admin API: " + ("on" if cfg.server.master_key else "off (no master key)"),
                    markup=False, highlight=False)
    processes, why = cfg.server.process_count()
    Console().print(f"gateway processes: {processes} ({why})" + (
        "; they share the port, the first runs the workers" if processes > 1 else ""),
        markup=False, highlight=False)
    cpus = usable_cpus()
    Console().print(f"CPUs: {cpus.logical} usable, {cpus.physical} physical ({cpus.why}); "
                    f"by default llama.cpp runs {cpus.physical} thread(s) and torch "
                    f"{cpus.logical} per worker, replicas of a model split them and models "
                    "share them (idle threads sleep); a model's `threads` overrides",
                    markup=False, highlight=False)
    for note in report.notes:
        console.print(f"[yellow]warning:[/] {escape(note)}\n  (only for a model that does not start "
                      "by default; needed with --model)", highlight=False, soft_wrap=True)
    if report.problems:
        for problem in report.problems:
            console.print(f"[bold red]error:[/] {escape(problem)}", highlight=False,
                          soft_wrap=True)
        # serve exits 2 on the same problems
        raise typer.Exit(2)
    Console().print("[green]config OK[/]")


def _api_key_option() -> Optional[str]:
    return typer.Option(None, "--api-key", envvar="MODELPORT_API_KEY", help="Bearer key, if set.")


@app.command()
def models(
    url: Optional[str] = url_option(),
    config: Optional[str] = ConfigOption,
    api_key: Optional[str] = _api_key_option(),
) -> None:
    """Show the models of a running server and their live status."""
    from modelport.cli.tables import models_table
    from modelport.cli.client import GatewayClient

    url = gateway_url(url, config)
    try:
        listing, health = GatewayClient(url, api_key).models_and_health()
    except ConnectionError as error:
        fail(error)
        return
    Console().print(models_table(url, listing, health.get("models", {}), health.get("memory")))


@app.command()
def chat(
    model: Optional[str] = typer.Argument(None, help="Model to chat with (default: first chat model)."),
    url: Optional[str] = url_option(),
    config: Optional[str] = ConfigOption,
    api_key: Optional[str] = _api_key_option(),
    message: Optional[str] = typer.Option(None, "--message", "-m", help="Send one message and exit."),
    max_tokens: int = typer.Option(512, help="Longest answer."),
) -> None:
    """Interactive streaming chat against a running server (/help lists its commands)."""
    from modelport.cli.chat_repl import ChatSession
    from modelport.cli.client import GatewayClient

    url = gateway_url(url, config)
    client = GatewayClient(url, api_key)
    try:
        model = model or client.first_chat_model()
    except ConnectionError as error:
        fail(error)
        return
    out = Console(highlight=False)
    session = ChatSession(lambda history: client.stream_chat(model, history, max_tokens), out)
    try:
        if message is not None:
            session.ask(message)
            return
        out.print(Text(f"chatting with {model} at {url}; /help for commands, /exit or "
                       "Ctrl-D to leave", style="dim"))
        session.loop(lambda: out.input(Text("you> ", style="bold cyan")))
    except ConnectionError as error:
        fail(error)


@app.command("import-config")
def import_config(
    paths: list[Path] = typer.Argument(
        ..., help="The old configs/model_config.py [configs/server_config.py], the configs "
        "folder (or the project folder above it), or a LiteLLM config.yaml."),
    output: Path = typer.Option(Path("modelport.yaml"), "-o", "--output", help="File to write."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Print what each old entry becomes; write nothing."),
    static: bool = typer.Option(False, "--static",
                                help="Read the Python files without running them."),
    timeout: float = typer.Option(60.0, "--timeout", min=1,
                                  help="Seconds the old config may take to run."),
    python: Optional[str] = typer.Option(
        None, "--python", help="Python that runs the old config, e.g. the old project's "
        "virtualenv (default: modelport's own)."),
) -> None:
    """Convert the old service's config (run as it ran, in a separate time-limited
    process) or a LiteLLM config.yaml to modelport.yaml."""
    from modelport.importer import NothingToImport
    from modelport.importer import import_config as import_files
    from modelport.importer.report import print_report

    try:
        result = import_files(paths, run=not static, timeout=timeout, python=python)
    except NothingToImport as error:
        console.print(Text("error: ", style="bold red") + Text(str(error)), soft_wrap=True)
        raise typer.Exit(1)
    except (ConfigError, OSError, SyntaxError) as error:
        fail(error)
    print_report(result, Console(highlight=False), console)
    if dry_run:
        Console().print(f"dry run: {output} was not written")
        return
    output.write_text(result.yaml_text, encoding="utf-8")
    Console().print(f"[green]wrote {output}[/]")


@app.command()
def pull(
    repo: str = typer.Argument(..., help="Hugging Face repo id, e.g. Qwen/Qwen2.5-0.5B-Instruct "
                               "(HF_ENDPOINT names a mirror), or modelscope:org/repo[:file]."),
    file: Optional[str] = typer.Option(None, "--file", help="Download only this file (e.g. a GGUF)."),
    revision: Optional[str] = typer.Option(None, help="Branch, tag or commit."),
    config: Optional[str] = ConfigOption,
    add_to_config: bool = typer.Option(
        False, "--add-to-config", help="Add the model to the config file (created if missing), "
        "keeping its comments."),
) -> None:
    """Download a model into models_dir, or the ModelScope cache (needs network access)."""
    from modelport.cli.config_edit import add_model
    from modelport.cli.pull import download
    from modelport.config.defaults import DEFAULT_CONFIG_FILE, config_file, find_config

    try:
        cfg = find_config(config)
        target, entry = download(repo, cfg.models_dir_path(), filename=file, revision=revision)
        Console().print(f"[green]downloaded to {target}[/]")
        if add_to_config:
            path = config_file(config) or Path(DEFAULT_CONFIG_FILE).absolute()
            add_model(path, entry)
            Console().print(f"added model '{entry['name']}' to {path}", markup=False)
    except ConfigError as error:
        fail(error)


def _add_admin_commands() -> None:
    from modelport.cli.admin import keys_app, load, reload, unload, usage

    app.add_typer(keys_app, name="keys")
    for command in (usage, load, unload, reload):
        app.command()(command)


_add_admin_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
