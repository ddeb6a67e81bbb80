from __future__ import annotations

import pytest

from modelport.config import parse_config
from modelport.errors import InvalidRequestError, ModelNotFoundError, ModelNotReadyError, RateLimitError
from modelport.routing.deployments import Deployment, DeploymentStatus, request_limit
from modelport.routing.registry import ModelRegistry


def models():
    return parse_config({"models": [
        {"name": "chat", "aliases": ["c"], "engine": "llamacpp", "path": "x.gguf", "parallel": 2,
         "max_queue": 1},
        {"name": "emb", "engine": "sentence-transformers", "path": "e"},
    ]}).models


def test_limit_is_running_plus_queued():
    assert request_limit(models()[0]) == 3


def test_acquire_refuses_past_the_limit_and_release_frees():
    deployment = Deployment(models()[0], "http://x/v1", 2, status=DeploymentStatus.READY)
    deployment.acquire()
    deployment.acquire()
    with pytest.raises(RateLimitError) as error:
        deployment.acquire()
    assert error.value.headers["Retry-After"] == "1"
    deployment.release()
    deployment.acquire()
    assert deployment.in_flight == 2


def test_not_ready_is_503_with_retry_after():
    deployment = Deployment(models()[0], "http://x/v1", 2)
    deployment.set_status(DeploymentStatus.RESTARTING, "worker exited")
    with pytest.raises(ModelNotReadyError, match="restarting") as error:
        deployment.acquire()
    assert int(error.value.headers["Retry-After"]) >= 1


def test_registry_routes_by_name_alias_and_kind():
    chat, emb = (Deployment(m, "http://x/v1", 1) for m in models())
    registry = ModelRegistry([chat, emb])
    assert registry.get("c") is chat
    assert registry.for_embeddings("emb") is emb
    with pytest.raises(InvalidRequestError):
        registry.for_chat("emb")
    with pytest.raises(InvalidRequestError):
        registry.for_embeddings("chat")
    with pytest.raises(ModelNotFoundError, match="served: chat, emb"):
        registry.get("gpt-4")


def test_only_online_and_vllm_models_take_images():
    config = parse_config({"models": [
        {"name": "gguf", "engine": "llamacpp", "path": "x.gguf"},
        {"name": "hf", "engine": "transformers", "path": "d"},
        {"name": "vl", "engine": "vllm", "path": "d"},
        {"name": "emb", "engine": "sentence-transformers", "path": "e"},
        {"name": "online", "engine": "openai", "base_url": "http://x/v1"},
    ]})
    vision = {m.name: Deployment(m, "http://x/v1", 1).capabilities.vision for m in config.models}
    assert vision == {"gguf": False, "hf": False, "vl": True, "emb": False, "online": True}


def test_plan_refuses_images_for_a_text_model_and_skips_text_fallbacks():
    config = parse_config({"models": [
        {"name": "gguf", "engine": "llamacpp", "path": "x.gguf"},
        {"name": "online", "engine": "openai", "base_url": "http://x/v1"},
    ]})
    gguf, online = (Deployment(m, "http://x/v1", 1) for m in config.models)
    online.fallbacks = (gguf,)
    registry = ModelRegistry([gguf, online])
    with pytest.raises(InvalidRequestError, match="'gguf' takes text only") as error:
        registry.plan(gguf, vision=True)
    assert error.value.param == "messages" and error.value.status == 400
    assert registry.plan(online, vision=True) == (online,)
    assert registry.plan(online) == (online, gguf)


def test_nulls_in_messages_and_tools_do_not_reach_a_local_engine():
    """llama.cpp answers 500 to an explicit null in an optional field; null means absent."""
    from modelport.api.relay import upstream_body
    from modelport.protocol import ChatCompletionRequest

    data = {"model": "chat", "messages": [{"role": "user", "content": "Hi", "name": None}],
            "tools": [{"type": "function", "function": {"name": "f", "description": None,
                                                        "parameters": {"type": "object"}}}]}
    body = upstream_body(Deployment(models()[0], "http://x/v1", 2), data,
                         ChatCompletionRequest.model_validate(data))
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert body["tools"] == [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object"}}}]
