"""One real `modelport serve` with the real default models (plus test upstreams) per session."""

from __future__ import annotations

import pytest

from fixtures.hf_checkpoint import smollm2_checkpoint_path
from support.counting_upstream import CountingUpstream
from support.fake_upstream import FakeUpstream
from fixtures.cross_encoder import minilm_cross_encoder  # noqa: F401 - a fixture
from fixtures.gguf_reranker import minilm_reranker_gguf  # noqa: F401 - a fixture
from support.models import (  # noqa: F401
    CHAT,
    GGUF_RERANKER,
    HF_TOOLS,
    MINILM,
    RERANKER,
    SMOLLM2,
    TINY,
    default_models,
)
from support.server import ModelportServer, free_port

UPSTREAM_KEY = "sk-upstream-secret-123"


@pytest.fixture(scope="session")
def fake_upstream():
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def counting_upstreams():
    """Two CountingUpstreams, X and Y: places a model's `deployments:` can point at."""
    x, y = CountingUpstream("X").start(), CountingUpstream("Y").start()
    yield x, y
    x.stop()
    y.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory, fake_upstream, minilm_cross_encoder, minilm_reranker_gguf):
    port = free_port()
    config = {
        "server": {"max_body_bytes": 1024 * 1024},
        "models": default_models() + [
            {"name": TINY, "engine": "llamacpp", "path": SMOLLM2, "context_length": 1024,
             "parallel": 1, "max_queue": 0},
            {"name": RERANKER, "engine": "cross-encoder", "path": str(minilm_cross_encoder),
             "threads": 1},
            {"name": GGUF_RERANKER, "engine": "llamacpp", "path": str(minilm_reranker_gguf),
             "reranking": True, "context_length": 512, "parallel": 2, "threads": 1},
            # A Hugging Face checkpoint on the transformers engine; its own template knows no
            # tools, the built-in one teaches it the <tool_call> format.
            {"name": HF_TOOLS, "engine": "transformers", "path": str(smollm2_checkpoint_path()),
             "device": "cpu", "context_length": 2048, "parallel": 2,
             "chat_template": "chatml-tools"},
            {"name": "dead-upstream", "engine": "openai",
             "base_url": f"http://127.0.0.1:{free_port()}/v1"},
            {"name": "slow-upstream", "engine": "openai", "base_url": fake_upstream.url("slow"),
             "read_timeout": 1},
            {"name": "broken-upstream", "engine": "openai", "base_url": fake_upstream.url("broken")},
            {"name": "limited-upstream", "engine": "openai",
             "base_url": fake_upstream.url("limited")},
            {"name": "echo-upstream", "engine": "openai", "base_url": fake_upstream.url("echo"),
             "api_key": "${E2E_UPSTREAM_KEY}", "upstream_model": "vendor-model-id"},
            # The gateway reaching itself as an OpenAI upstream: a two-hop chain.
            {"name": "chained", "engine": "openai", "base_url": f"http://127.0.0.1:{port}/v1",
             "upstream_model": CHAT},
        ],
    }
    instance = ModelportServer(config, tmp_path_factory.mktemp("e2e"), port=port,
                               env={"E2E_UPSTREAM_KEY": UPSTREAM_KEY})
    instance.start(timeout=300)
    yield instance
    instance.stop()


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0, timeout=120)
