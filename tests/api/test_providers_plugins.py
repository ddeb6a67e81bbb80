"""Provider plugins: the documented example, the ported do_chat worker, entry points, and
plugins that raise or return garbage (a clean 502 naming the plugin, never a crash)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from modelport.config import parse_config
from modelport.errors import ConfigError
from modelport.gateway.build import build_state
from support.vendor_fakes import InProcessGateway, streamed_text
from support.vendor_fakes_plugins import BusyProvider

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "modelport-example-plugin"
ECHO = "modelport_example_plugin.echo:EchoProvider"
LEGACY = "modelport_example_plugin.legacy:LegacyEchoWorker"
KEY = "plugin-key-0123456789"


@pytest.fixture(scope="module", autouse=True)
def example_on_path():
    sys.path.insert(0, str(EXAMPLE))
    yield
    sys.path.remove(str(EXAMPLE))


def plugin(name, provider, **fields):
    return {"name": name, "engine": "plugin", "provider": provider, "api_key": KEY,
            "retries": {"attempts": 2, "backoff": 0.01}, **fields}


@pytest.fixture(scope="module")
def gateway(example_on_path):
    broken = "support.vendor_fakes_plugins"
    gw = InProcessGateway({"models": [
        plugin("echo", ECHO, options={"prefix": "echo: "}),
        plugin("legacy", LEGACY, upstream_model="old-vendor-model"),
        plugin("raising", f"{broken}:RaisingProvider"),
        plugin("garbage", f"{broken}:GarbageProvider"),
        plugin("garbage-usage", f"{broken}:GarbageUsageProvider"),
        plugin("garbage-stream", f"{broken}:GarbageStreamProvider"),
        plugin("mid-stream", f"{broken}:FailsMidStreamProvider"),
        plugin("busy", f"{broken}:BusyProvider"),
        plugin("bad-embeddings", f"{broken}:BadEmbeddingsProvider"),
        plugin("raising-with-fallback", f"{broken}:RaisingProvider", fallbacks=["echo"]),
    ]})
    yield gw
    gw.close()


def test_example_plugin_answers_with_usage(gateway):
    response = gateway.chat("echo", "hello world")
    assert response.status_code == 200
    answer = response.json()
    assert answer["model"] == "echo" and answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "echo: hello world"
    assert answer["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}


def test_example_plugin_streams_its_pieces(gateway):
    response, events = gateway.stream("echo", "hello world",
                                      stream_options={"include_usage": True})
    assert response.status_code == 200
    assert streamed_text(events) == "echo: hello world"
    assert events[-1] == "[DONE]" and events[-2]["usage"]["completion_tokens"] == 3


def test_example_plugin_embeds(gateway):
    response = gateway.call("POST", "/v1/embeddings", json={"model": "echo", "input": ["a", "b"]})
    assert response.status_code == 200
    assert [len(d["embedding"]) for d in response.json()["data"]] == [8, 8]


def test_a_plugin_without_stream_chat_streams_its_whole_answer_as_one_chunk(gateway):
    BusyProvider.calls = 1  # past its one refusal
    response, events = gateway.stream("busy")  # BusyProvider has only `chat`
    texts = [e["choices"][0]["delta"].get("content") for e in events
             if isinstance(e, dict) and e["choices"] and e["choices"][0]["delta"].get("content")]
    assert texts == ["second try"] and events[-1] == "[DONE]"


def test_ported_do_chat_worker_answers_and_streams_increments(gateway):
    assert gateway.chat("legacy", "hi").json()["choices"][0]["message"]["content"] == \
        "old-vendor-model says hi"
    response, events = gateway.stream("legacy", "hi")
    assert streamed_text(events) == "old-vendor-model says hi"  # increments, not repeats


def test_ported_do_chat_error_code_becomes_an_openai_error(gateway):
    response = gateway.chat("legacy", "fail")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "500" and "the vendor refused" in error["message"]
    assert LEGACY in error["message"]


@pytest.mark.parametrize("model, says", [
    ("raising", "RuntimeError"),
    ("garbage", "returned int"),
    ("garbage-usage", "returned ChatResult"),
])
def test_broken_plugins_give_a_clean_502_naming_the_plugin(gateway, model, says, caplog):
    with caplog.at_level(logging.ERROR, logger="modelport"):
        response = gateway.chat(model)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "provider_error"
    assert "support.vendor_fakes_plugins:" in error["message"] and says in error["message"]
    assert KEY not in response.text and KEY not in caplog.text
    assert gateway.chat("echo").status_code == 200  # the gateway is unharmed


def test_plugin_traceback_is_logged_with_the_key_masked(gateway, caplog):
    with caplog.at_level(logging.ERROR, logger="modelport.providers"):
        gateway.chat("raising")
    assert "Traceback" in caplog.text and "vendor SDK exploded" in caplog.text
    assert KEY not in caplog.text


def test_broken_plugin_streams_fail_cleanly(gateway):
    response = gateway.chat("garbage-stream", stream=True)
    assert response.status_code == 502 and "returned dict" in response.json()["error"]["message"]
    # Failing after the first words: the 200 is out, so the stream ends with an error event.
    response, events = gateway.stream("mid-stream")
    assert response.status_code == 200
    assert streamed_text(events) == "first words "
    assert "ConnectionResetError" in events[-2]["error"]["message"] and events[-1] == "[DONE]"


def test_bad_embeddings_are_a_502(gateway):
    response = gateway.call("POST", "/v1/embeddings",
                            json={"model": "bad-embeddings", "input": ["a", "b"]})
    assert response.status_code == 502


def test_a_plugin_may_ask_for_a_retry_with_a_5xx(gateway):
    BusyProvider.calls = 0  # its first call raises UpstreamError(status=503)
    response = gateway.chat("busy")
    assert response.status_code == 200 and BusyProvider.calls == 2


def test_a_broken_plugin_falls_back(gateway):
    response = gateway.chat("raising-with-fallback", "hi")
    assert response.status_code == 200
    assert response.json()["model"] == "echo"
    assert response.headers["x-modelport-fallback-from"] == "raising-with-fallback"


def test_plugins_without_embed_or_completions_say_so(gateway):
    assert gateway.call("POST", "/v1/embeddings",
                        json={"model": "legacy", "input": "x"}).status_code == 400
    assert gateway.call("POST", "/v1/completions",
                        json={"model": "echo", "prompt": "x"}).status_code == 400


def test_entry_point_names_load_installed_plugins(tmp_path, monkeypatch):
    # An installed distribution, as pip leaves it: metadata with the entry point.
    dist = tmp_path / "modelport_example_plugin-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: modelport-example-plugin\n"
                                   "Version: 0.1.0\n")
    declared = (EXAMPLE / "pyproject.toml").read_text().split(
        '[project.entry-points."modelport.providers"]')[1]
    (dist / "entry_points.txt").write_text(
        "[modelport.providers]\n" + declared.replace('"', "").strip() + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    gateway = InProcessGateway({"models": [{"name": "e", "engine": "plugin", "provider": "echo"}]})
    try:
        assert gateway.chat("e", "via entry point").json()["choices"][0]["message"][
            "content"] == "via entry point"
    finally:
        gateway.close()


@pytest.mark.parametrize("provider, message", [
    ("no_such_package.mod:Thing", "cannot import no_such_package"),
    ("support.vendor_fakes_plugins:Missing", "has no Missing"),
    ("not-installed-name", "entry point"),
    ("support.vendor_fakes_plugins:CrashesAtStartProvider", "failed to start: ValueError"),
    ("support.vendor_fakes_plugins:NoChatMethod", "async def chat"),
])
def test_plugins_that_cannot_start_are_start_up_errors(provider, message):
    config = parse_config({"models": [{"name": "p", "engine": "plugin", "provider": provider,
                                       "api_key": KEY}]})
    with pytest.raises(ConfigError, match=message) as error:
        build_state(config)
    assert KEY not in str(error.value)


LOOKUP = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def test_a_plugins_tool_calls_reach_the_client():
    gw = InProcessGateway({"models": [
        plugin("tool-caller", "support.vendor_fakes_plugins:ToolCallingProvider")]})
    try:
        response = gw.chat("tool-caller", "weather in Paris", tools=LOOKUP)
    finally:
        gw.close()
    assert response.status_code == 200
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "lookup", "arguments": '{"q":"weather in Paris"}'}


def test_a_streaming_plugins_tool_call_arrives_name_first_then_arguments():
    gw = InProcessGateway({"models": [
        plugin("tool-streamer", "support.vendor_fakes_plugins:StreamingToolCallingProvider")]})
    try:
        response, events = gw.stream("tool-streamer", "x", tools=LOOKUP)
    finally:
        gw.close()
    assert response.status_code == 200 and events[-1] == "[DONE]"
    assert streamed_text(events) == "Looking that up. "
    deltas = [e["choices"][0]["delta"]["tool_calls"][0] for e in events if isinstance(e, dict)
              and e.get("choices") and "tool_calls" in e["choices"][0]["delta"]]
    assert deltas[0] == {"index": 0, "id": "call_fixed", "type": "function",
                         "function": {"name": "lookup", "arguments": ""}}
    assert deltas[1] == {"index": 0, "function": {"arguments": '{"q": "x"}'}}
    finishes = [e["choices"][0]["finish_reason"] for e in events
                if isinstance(e, dict) and e.get("choices")]
    assert finishes[-1] == "tool_calls"


def test_a_plugin_that_does_not_declare_tools_is_a_400_naming_why(gateway):
    response = gateway.chat("echo", "hi", tools=LOOKUP)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "model 'echo' cannot call tools" in message and "supports_tools" in message
