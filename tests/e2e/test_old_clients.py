"""Clients written for the old service keep working: `openai==0.28` streaming code that
concatenates `delta.get("content", "")` (or `+=`s it), and the current SDK, against every
chat model kind (llama.cpp, transformers, online upstreams) and /v1/completions.

openai 0.28 is installed into the pytest cache (once per checkout, on first use) and run
in a subprocess with only that on PYTHONPATH, so this process keeps the current SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from aiohttp import web

from support.models import CHAT, HF_TOOLS
from support.server import ModelportServer
from support.threaded_app import ThreadedApp

OLD_SDK = "openai==0.28.1"
UPSTREAM_TEXT = ["Hello", " from", " an", " online", " API"]

# The streaming idioms of code written for the old service, verbatim in spirit: a missing
# or null content must never reach "".join or +=.
OLD_CLIENT = r'''
import json, sys
import openai

assert openai.version.VERSION.startswith("0.28"), openai.version.VERSION
openai.api_base, openai.api_key = sys.argv[1], "EMPTY"
kind, model = sys.argv[2], sys.argv[3]
if kind == "chat":
    joined, added = [], ""
    response = openai.ChatCompletion.create(
        model=model, messages=[{"role": "user", "content": "Hello! What is your name?"}],
        max_tokens=8, temperature=0, stream=True)
    for chunk in response:
        delta = chunk.choices[0].delta
        joined.append("".join(delta.get("content", "")))
        added += delta.get("content", "")
    text = "".join(joined)
    assert text == added
else:
    text = ""
    for chunk in openai.Completion.create(model=model, prompt="Once upon a time",
                                          max_tokens=8, temperature=0, stream=True):
        text += chunk["choices"][0]["text"]
print(json.dumps({"text": text}))
'''


class NullOpeningUpstream(ThreadedApp):
    """An OpenAI-compatible API whose stream opens as llama.cpp's does, with
    `"content": null`, written with Python's json spacing."""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        deltas = [{"role": "assistant", "content": None}]
        deltas += [{"content": piece} for piece in UPSTREAM_TEXT]
        for delta in deltas + [{}]:
            event = {"id": "x", "object": "chat.completion.chunk", "created": 0,
                     "model": "vendor-id", "choices": [{"index": 0, "delta": delta,
                     "finish_reason": None if delta else "stop"}]}
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        return app


@pytest.fixture(scope="session")
def old_sdk(request, tmp_path_factory) -> str:
    """A folder holding openai 0.28 alone (its dependencies are in the test environment):
    kept in pytest's cache between runs, or made for this run when the cache is off."""
    cache = getattr(request.config, "cache", None)
    target = Path(cache.mkdir("openai-0.28")) if cache else tmp_path_factory.mktemp("openai")
    if not (target / "openai" / "version.py").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--target", str(target), OLD_SDK], check=True, timeout=300)
    return str(target)


@pytest.fixture(scope="module")
def online(tmp_path_factory):
    upstream = NullOpeningUpstream().start()
    instance = ModelportServer(
        {"models": [{"name": "online-chat", "engine": "openai", "base_url": upstream.url}]},
        tmp_path_factory.mktemp("old-clients"))
    instance.start(timeout=60)
    yield instance
    instance.stop()
    upstream.stop()


def run_old_client(old_sdk: str, base_url: str, kind: str, model: str) -> str:
    env = {**os.environ, "PYTHONPATH": old_sdk}
    done = subprocess.run([sys.executable, "-c", OLD_CLIENT, base_url, kind, model],
                          capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["text"]


def raw_chunks(base_url: str, path: str, body: dict) -> list[dict]:
    with httpx.stream("POST", base_url + path, json={**body, "stream": True},
                      timeout=240) as response:
        assert response.status_code == 200, response.read()
        text = response.read().decode()
    payloads = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    return [orjson.loads(payload) for payload in payloads[:-1]]


def assert_openai_chunk_types(chunks: list[dict], obj: str) -> None:
    """The fields OpenAI's chunks carry, with OpenAI's types, on every chunk."""
    for chunk in chunks:
        assert isinstance(chunk["id"], str) and chunk["object"] == obj
        assert isinstance(chunk["created"], int) and isinstance(chunk["model"], str)
        for choice in chunk["choices"]:
            assert isinstance(choice["index"], int)
            assert choice["finish_reason"] is None or isinstance(choice["finish_reason"], str)
            if obj == "text_completion":
                assert isinstance(choice["text"], str)
            elif "content" in choice["delta"]:
                assert isinstance(choice["delta"]["content"], str), chunk


CHAT_KINDS = [
    pytest.param("server", CHAT, id="llamacpp"),
    pytest.param("server", HF_TOOLS, id="transformers"),
    # The gateway reaching itself as an OpenAI upstream (llama.cpp behind it).
    pytest.param("server", "chained", id="openai-upstream-chain"),
    pytest.param("online", "online-chat", id="openai-upstream-null-opening"),
]


@pytest.mark.parametrize("which, model", CHAT_KINDS)
def test_old_sdk_streaming_idioms_work_on_every_chat_model_kind(request, old_sdk, which, model):
    gateway = request.getfixturevalue(which)
    text = run_old_client(old_sdk, gateway.base_url, "chat", model)
    assert text.strip()
    if which == "online":
        assert text == "".join(UPSTREAM_TEXT)
    chunks = raw_chunks(gateway.base_url, "/chat/completions", {
        "model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
    opening = chunks[0]["choices"][0]["delta"]
    assert opening == {"role": "assistant", "content": ""}
    assert_openai_chunk_types(chunks, "chat.completion.chunk")


@pytest.mark.parametrize("model", [CHAT, HF_TOOLS])
def test_old_sdk_streams_text_completions(server, old_sdk, model):
    assert run_old_client(old_sdk, server.base_url, "completion", model).strip()
    chunks = raw_chunks(server.base_url, "/completions",
                        {"model": model, "max_tokens": 4, "prompt": "Once upon a time"})
    assert_openai_chunk_types(chunks, "text_completion")


@pytest.mark.parametrize("which, model", CHAT_KINDS)
def test_current_sdk_streams_every_chat_model_kind(request, which, model):
    from openai import OpenAI

    gateway = request.getfixturevalue(which)
    client = OpenAI(base_url=gateway.base_url, api_key="EMPTY", max_retries=0, timeout=240)
    text = ""
    for chunk in client.chat.completions.create(
            model=model, max_tokens=8, stream=True,
            messages=[{"role": "user", "content": "Hello! What is your name?"}]):
        text += chunk.choices[0].delta.content or ""
    assert text.strip()
    stream = client.completions.create(model=CHAT, prompt="Once upon", max_tokens=4,
                                       stream=True) if which == "server" else []
    assert all(isinstance(chunk.choices[0].text, str) for chunk in stream)
