"""The transformers engine: text streaming logic, admission, loading options and
generation with a real SmolLM2 checkpoint (loaded once for the module)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from fixtures.hf_checkpoint import smollm2_base_checkpoint, smollm2_checkpoint  # noqa: F401
from modelport.config import TransformersModel
from modelport.engines.text_streaming import IncrementalDecoder, StopSequenceFilter
from modelport.engines.transformers_engine import (
    Finished,
    SamplingParams,
    TextDelta,
    TransformersEngine,
)
from modelport.errors import ConfigError, ContextLengthError

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _model(path: Path, **overrides) -> TransformersModel:
    fields = {
        "name": "smollm2-hf",
        "engine": "transformers",
        "path": str(path),
        "device": "cpu",
        **overrides,
    }
    return TransformersModel(**fields)


def _load(path: Path, **overrides) -> TransformersEngine:
    return TransformersEngine.load(_model(path, **overrides), path)


def _copy_with_config(source: Path, destination: Path, **config_changes) -> Path:
    """A checkpoint folder sharing `source`'s files except for an edited config.json."""
    destination.mkdir()
    for file in source.iterdir():
        if file.name != "config.json":
            os.symlink(file, destination / file.name)
    config = json.loads((source / "config.json").read_text())
    config.update(config_changes)
    (destination / "config.json").write_text(json.dumps(config))
    return destination


# -- incremental decoding and stop sequences (no model) -----------------------------


def test_decoder_holds_back_a_character_split_across_tokens():
    # Byte-level tokens: "é" is two UTF-8 bytes, each its own token.
    pieces = {1: b"caf", 2: b"\xc3", 3: b"\xa9", 4: b"!"}

    def decode(ids):
        return b"".join(pieces[i] for i in ids).decode("utf-8", errors="replace")

    decoder = IncrementalDecoder(decode)
    assert [decoder.push(token) for token in (1, 2, 3, 4)] == ["caf", "", "é", "!"]
    assert decoder.flush() == ""


def test_decoder_uses_prompt_context_for_the_first_token():
    # A SentencePiece-like decode that drops the leading space of the first word.
    words = {1: "Hello", 2: " world"}

    def decode(ids):
        return "".join(words[i] for i in ids).lstrip()

    decoder = IncrementalDecoder(decode, context_ids=[1])
    assert decoder.push(2) == " world"


def test_stop_filter_cuts_a_stop_sequence_split_across_pieces():
    stops = StopSequenceFilter(["END"])
    emitted = [stops.push(piece) for piece in ("one E", "N", "D two")]
    assert "".join(emitted) == "one "
    assert stops.stopped
    assert stops.push("more") == ""


def test_stop_filter_releases_held_text_that_was_not_a_stop():
    stops = StopSequenceFilter(["END"])
    assert stops.push("the EN") == "the "  # "EN" might start END
    assert stops.push("ding") == "ENding"
    assert stops.push(" E") == " "
    assert stops.flush() == "E"
    assert not stops.stopped


def test_stop_filter_stops_at_the_earliest_of_several_stops():
    stops = StopSequenceFilter(["zzz", "b"])
    assert stops.push("a b c zzz") == "a "


# -- generation with the real checkpoint -------------------------------------------------


@pytest.fixture(scope="module")
def engine(smollm2_checkpoint):  # noqa: F811
    return _load(smollm2_checkpoint, context_length=512)


def test_chat_answer_mentions_paris_at_temperature_zero(engine):
    completion = engine.generate(engine.chat_prompt(CAPITAL), SamplingParams(temperature=0))
    assert "Paris" in completion.text
    assert completion.finish_reason == "stop"
    assert "<|im_end|>" not in completion.text


def test_the_prompt_comes_from_the_tokenizers_own_chat_template(engine):
    prompt = engine.decode(engine.chat_prompt(CAPITAL))
    assert "You are a helpful AI assistant named SmolLM" in prompt  # the template's default
    assert prompt.rstrip().endswith("assistant")


def test_events_stream_token_by_token(engine):
    events = []
    done = threading.Event()

    def sink(event):
        events.append(event)
        if isinstance(event, Finished):
            done.set()

    engine.submit(engine.chat_prompt(CAPITAL), SamplingParams(temperature=0), sink)
    assert done.wait(60)
    deltas = [event.text for event in events if isinstance(event, TextDelta)]
    assert len(deltas) >= 4
    assert "Paris" in "".join(deltas)
    assert isinstance(events[-1], Finished)


def test_stop_sequence_is_trimmed_and_ends_generation(engine):
    completion = engine.generate(
        engine.chat_prompt(CAPITAL), SamplingParams(temperature=0, stop=(" Paris",))
    )
    assert completion.text == "The capital of France is"
    assert completion.finish_reason == "stop"


def test_max_tokens_ends_with_finish_reason_length(engine):
    completion = engine.generate(
        engine.chat_prompt(CAPITAL), SamplingParams(temperature=0, max_tokens=2)
    )
    assert completion.finish_reason == "length"
    assert completion.completion_tokens == 2


def test_seed_makes_sampling_reproducible(engine):
    prompt = engine.chat_prompt([{"role": "user", "content": "Name a colour."}])
    params = SamplingParams(temperature=1.5, top_p=0.95, seed=1234, max_tokens=12)
    first, second = engine.generate(prompt, params), engine.generate(prompt, params)
    assert first.text == second.text
    others = {
        engine.generate(prompt, SamplingParams(temperature=1.5, seed=s, max_tokens=12)).text
        for s in range(4)
    }
    assert len(others) > 1  # temperature really samples


def test_prompt_longer_than_the_context_is_refused_not_truncated(engine):
    prompt = engine.text_prompt("word " * 600)
    with pytest.raises(ContextLengthError) as refused:
        engine.generate(prompt, SamplingParams())
    assert refused.value.status == 400
    assert "512" in refused.value.message
    assert engine.stats().in_flight == 0


def test_max_tokens_that_would_overflow_the_context_is_refused(engine):
    with pytest.raises(ContextLengthError):
        engine.generate(engine.chat_prompt(CAPITAL), SamplingParams(max_tokens=500))


def test_context_length_defaults_to_max_position_embeddings(smollm2_checkpoint):  # noqa: F811
    assert _load(smollm2_checkpoint).context_length == 8192


def test_cancel_stops_the_generation_thread_promptly(engine):
    first_text = threading.Event()
    finished: list[Finished] = []

    def sink(event):
        if isinstance(event, TextDelta):
            first_text.set()
        elif isinstance(event, Finished):
            finished.append(event)

    generation = engine.submit(
        engine.text_prompt("1, 2, 3, 4,"), SamplingParams(temperature=0, max_tokens=450), sink
    )
    assert first_text.wait(30)
    generation.cancel()
    assert generation.wait(timeout=3)  # 450 tokens would take ~25 s
    assert finished[0].finish_reason == "cancelled"
    assert finished[0].completion_tokens < 100
    assert engine.stats().in_flight == 0


# -- loading options ------------------------------------------------------------------


def test_base_model_without_chat_template_is_refused(smollm2_base_checkpoint):  # noqa: F811
    with pytest.raises(ConfigError, match="no chat template") as refused:
        _load(smollm2_base_checkpoint)
    assert "chat" in refused.value.message and "base model" in refused.value.message


def test_chat_template_override_makes_a_base_model_usable(smollm2_base_checkpoint):  # noqa: F811
    engine = _load(smollm2_base_checkpoint, chat_template=CHATML_TEMPLATE)
    prompt = engine.decode(engine.chat_prompt(CAPITAL))
    assert "SmolLM" not in prompt  # our template, not a leftover default system prompt
    completion = engine.generate(engine.chat_prompt(CAPITAL), SamplingParams(temperature=0))
    assert "Paris" in completion.text


def test_broken_chat_template_override_is_a_config_error(smollm2_checkpoint):  # noqa: F811
    with pytest.raises(ConfigError, match="chat_template"):
        _load(smollm2_checkpoint, chat_template="{% for m in messages %}{{ m.content ")


def test_missing_folder_is_refused_offline_without_reaching_the_hub(tmp_path):
    missing = tmp_path / "HuggingFaceTB" / "SmolLM2-135M-Instruct"
    with pytest.raises(ConfigError) as refused:
        _load(missing)
    assert "Offline mode" in refused.value.message
    assert "allow_download" in refused.value.message


def test_missing_file_names_the_file_and_offline_mode(smollm2_checkpoint, tmp_path):  # noqa: F811
    folder = tmp_path / "no-config"
    folder.mkdir()
    for file in smollm2_checkpoint.iterdir():
        if file.name != "config.json":
            os.symlink(file, folder / file.name)
    with pytest.raises(ConfigError) as refused:
        _load(folder)
    assert "offline mode" in refused.value.message
    assert "config.json" in refused.value.message


def test_missing_weights_are_named(smollm2_checkpoint, tmp_path):  # noqa: F811
    folder = tmp_path / "no-weights"
    folder.mkdir()
    for file in smollm2_checkpoint.iterdir():
        if not file.name.endswith(".safetensors"):
            os.symlink(file, folder / file.name)
    with pytest.raises(ConfigError, match="model.safetensors"):
        _load(folder)


def test_load_8bit_without_bitsandbytes_names_the_package(smollm2_checkpoint):  # noqa: F811
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed")
    with pytest.raises(ConfigError, match="`bitsandbytes`"):
        _load(smollm2_checkpoint, load_8bit=True)


def test_gptq_checkpoint_names_the_missing_packages(smollm2_checkpoint, tmp_path):  # noqa: F811
    import importlib.util

    if importlib.util.find_spec("gptqmodel") and importlib.util.find_spec("optimum"):
        pytest.skip("GPTQ support is installed")
    folder = _copy_with_config(
        smollm2_checkpoint,
        tmp_path / "gptq",
        quantization_config={"quant_method": "gptq", "bits": 4, "group_size": 128},
    )
    with pytest.raises(ConfigError, match="GPTQ") as refused:
        _load(folder)
    assert "gptqmodel" in refused.value.message


def test_awq_checkpoint_names_the_missing_package(smollm2_checkpoint, tmp_path):  # noqa: F811
    import importlib.util

    if importlib.util.find_spec("gptqmodel"):
        pytest.skip("AWQ support is installed")
    folder = _copy_with_config(
        smollm2_checkpoint, tmp_path / "awq", quantization_config={"quant_method": "awq", "bits": 4}
    )
    with pytest.raises(ConfigError, match="AWQ.*gptqmodel"):
        _load(folder)


def test_cpu_int8_with_a_gpu_device_is_refused(smollm2_checkpoint):  # noqa: F811
    with pytest.raises(ConfigError, match="cpu_int8"):
        _load(smollm2_checkpoint, cpu_int8=True, device="cuda")


def test_requesting_cuda_without_a_gpu_is_a_config_error(smollm2_checkpoint):  # noqa: F811
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="cuda"):
        _load(smollm2_checkpoint, device="cuda")


def test_cpu_int8_replaces_every_linear_layer_and_still_answers(smollm2_checkpoint):  # noqa: F811
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    engine = _load(smollm2_checkpoint, cpu_int8=True)
    modules = list(engine.checkpoint.model.modules())
    quantized = [m for m in modules if isinstance(m, DynamicInt8Linear)]
    float_linear = [m for m in modules if type(m) is torch.nn.Linear]
    assert float_linear == []
    assert len(quantized) == 30 * 7 + 1  # q,k,v,o,gate,up,down per layer + lm_head
    assert quantized[0].weight().dtype == torch.qint8
    completion = engine.generate(
        engine.chat_prompt(CAPITAL), SamplingParams(temperature=0, max_tokens=20)
    )
    assert "Paris" in completion.text
