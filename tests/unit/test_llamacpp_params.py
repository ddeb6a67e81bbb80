"""What the llama.cpp worker asks of llama.cpp's server, from the model's config."""

from __future__ import annotations

from pathlib import Path

from modelport.config import LlamaCppModel
from modelport.workers.llamacpp_worker import build_params


def model(**fields) -> LlamaCppModel:
    return LlamaCppModel.model_validate({"name": "m", "engine": "llamacpp", "path": "m.gguf",
                                         **fields})


def test_the_prompt_cache_is_bounded_by_default_and_configurable():
    # llama.cpp's own default (8 GiB) let a worker grow by ~1 GB in a 30-minute soak.
    assert build_params(model(), Path("m.gguf"), "127.0.0.1", 1).cache_ram_mib == 512
    assert build_params(model(prompt_cache_mib=0), Path("m.gguf"), "127.0.0.1", 1
                        ).cache_ram_mib == 0


def test_reranking_asks_for_rank_pooling_as_llama_server_reranking_does():
    import xllamacpp

    plain = build_params(model(), Path("m.gguf"), "127.0.0.1", 1)
    assert plain.embedding is False
    params = build_params(model(reranking=True, context_length=1024), Path("r.gguf"),
                          "127.0.0.1", 1)
    assert params.embedding is True
    assert params.pooling_type == xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_RANK
    # a whole (query, document) pair is one pass: it must fit one physical batch
    assert params.n_ubatch == params.n_batch == 1024


def test_a_builtin_chat_template_reaches_llamacpp_as_its_jinja_text():
    from modelport.chat_templates import builtin_template

    params = build_params(model(chat_template="chatml-tools"), Path("m.gguf"), "127.0.0.1", 1)
    assert params.chat_template == builtin_template("chatml-tools")
    assert params.use_jinja  # tools and tool calls need llama.cpp's Jinja templates
    # llama.cpp's own template names pass through as they are.
    assert build_params(model(chat_template="chatml"), Path("m.gguf"), "127.0.0.1", 1
                        ).chat_template == "chatml"


def test_a_lane_adds_engine_slots_that_only_the_reserved_may_take():
    from modelport.routing.deployments import queue_settings, running_slots

    laned = model(parallel=2, lane_slots=1, reserved_slots=1, context_length=512)
    params = build_params(laned, Path("m.gguf"), "127.0.0.1", 1)
    assert params.n_parallel == 3
    assert params.n_ctx == 3 * 512  # the lane's slot gets a whole context too
    assert running_slots(laned) == 3
    assert queue_settings(laned).reserved_slots == 2  # the lane's and the configured one
    plain = model(parallel=2)
    assert build_params(plain, Path("m.gguf"), "127.0.0.1", 1).n_parallel == 2
    assert (running_slots(plain), queue_settings(plain).reserved_slots) == (2, 0)
