"""Two real modelport instances in a chain: the second reaches the first (which serves the
real GGUF model) as an `openai` vendor entry, and the official SDK streams through both."""

from __future__ import annotations

import pytest
from openai import OpenAI

from support.models import CHAT
from support.server import ModelportServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def front(server, tmp_path_factory):
    config = {"models": [
        {"name": "via-vendor", "engine": "openai", "vendor": "openai",
         "base_url": server.base_url, "api_key": "${CHAIN_UPSTREAM_KEY}", "upstream_model": CHAT,
         "fallbacks": ["unreachable-backup"]},
        # Never needed here: only proves a fallback list does not disturb a healthy chain.
        {"name": "unreachable-backup", "engine": "openai", "base_url": "http://127.0.0.1:9/v1"},
    ]}
    instance = ModelportServer(config, tmp_path_factory.mktemp("chain"),
                               env={"CHAIN_UPSTREAM_KEY": "sk-chain-0123456789"})
    instance.start(timeout=60)
    yield instance
    instance.stop()


@pytest.fixture
def sdk(front):
    return OpenAI(base_url=front.base_url, api_key="EMPTY", max_retries=0, timeout=120)


def test_the_sdk_streams_through_both_gateways(sdk):
    chunks = list(sdk.chat.completions.create(
        model="via-vendor", messages=[{"role": "user", "content": "Hello! What is your name?"}],
        max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert {c.model for c in chunks} == {"via-vendor"}
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_a_plain_answer_through_both_gateways(sdk, front):
    raw = sdk.chat.completions.with_raw_response.create(
        model="via-vendor", messages=[{"role": "user", "content": "Say hi"}], max_tokens=5, temperature=0)
    reply = raw.parse()
    assert raw.headers["x-modelport-model"] == "via-vendor"
    assert reply.model == "via-vendor" and reply.choices[0].message.content
    assert "sk-chain-0123456789" not in front.log()
