"""Continuous batching in the transformers engine, with a real SmolLM2 checkpoint: requests
that arrive while others generate join the running batch, each keeps its own options, and
checkpoints the batch cannot serve fall back to a thread per request."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from fixtures.hf_checkpoint import smollm2_checkpoint  # noqa: F401  (pytest fixture)
from modelport.config import TransformersModel
from modelport.engines.transformers_batch_plan import BatchSupport, batch_support
from modelport.engines.transformers_engine import TransformersEngine
from modelport.engines.transformers_kv import unbatchable
from modelport.engines.transformers_requests import Finished, TextDelta
from modelport.engines.transformers_sampling import SamplingParams

COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"
QUESTIONS = ["What is the capital of France?", "Name a colour.", "Write a haiku about the sea."]


def _model(path: Path, **overrides) -> TransformersModel:
    return TransformersModel(**{"name": "smollm2-hf", "engine": "transformers", "path": str(path),
                                "device": "cpu", "context_length": 512, **overrides})


@pytest.fixture(scope="module")
def engine(smollm2_checkpoint):  # noqa: F811
    loaded = TransformersEngine.load(_model(smollm2_checkpoint, parallel=4), smollm2_checkpoint)
    yield loaded
    loaded.close()


class Collected:
    """A generation's text and its last event, filled in by the engine's thread."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.outcome = None
        self.first_text = threading.Event()
        self.done = threading.Event()

    def __call__(self, event) -> None:
        if isinstance(event, TextDelta):
            self.pieces.append(event.text)
            self.first_text.set()
        else:
            self.outcome = event
            self.done.set()

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _submit(engine, prompt, params) -> tuple:
    collected = Collected()
    return engine.submit(prompt, params, collected), collected


def _wait_all(*collected: Collected) -> None:
    for each in collected:
        assert each.done.wait(120), "a generation did not finish"


def test_a_request_arriving_during_another_joins_its_forward_passes(engine):
    before = engine.stats().batch
    _, long = _submit(engine, engine.text_prompt(COUNTING), SamplingParams(temperature=0,
                                                                          max_tokens=40))
    assert long.first_text.wait(60)
    _, short = _submit(engine, engine.chat_prompt([{"role": "user", "content": QUESTIONS[0]}]),
                       SamplingParams(temperature=0, max_tokens=8))
    _wait_all(long, short)
    after = engine.stats().batch
    steps, row_steps = after.steps - before.steps, after.row_steps - before.row_steps
    # Alone, each step decodes one row; the newcomer shared steps with the running request.
    assert row_steps > steps
    assert after.largest_batch >= 2
    # Both are complete: the long one ran to its limit, the short one joined and left.
    assert long.outcome == Finished("length", long.outcome.prompt_tokens, 40)
    assert short.outcome.completion_tokens == 8
    assert engine.stats().in_flight == 0


def test_greedy_answers_are_the_same_alone_and_in_a_batch(engine):
    prompts = [engine.chat_prompt([{"role": "user", "content": q}]) for q in QUESTIONS]
    params = SamplingParams(temperature=0, max_tokens=24)
    alone = [engine.generate(prompt, params).text for prompt in prompts]
    together = [_submit(engine, prompt, params)[1] for prompt in prompts]
    _wait_all(*together)
    assert [each.text for each in together] == alone
    assert "Paris" in alone[0]


def test_a_seed_gives_the_same_sample_alone_and_beside_other_requests(engine):
    prompt = engine.chat_prompt([{"role": "user", "content": QUESTIONS[1]}])
    seeded = SamplingParams(temperature=1.2, top_p=0.95, seed=77, max_tokens=16)
    alone = engine.generate(prompt, seeded).text
    others = [_submit(engine, engine.text_prompt(COUNTING),
                      SamplingParams(temperature=1.0, seed=s, max_tokens=20))[1] for s in (1, 2)]
    _, beside = _submit(engine, prompt, seeded)
    _wait_all(beside, *others)
    assert beside.text == alone
    unseeded = {engine.generate(prompt, replace(seeded, seed=s)).text for s in range(3)}
    assert len(unseeded) > 1  # the temperature really samples


def test_a_stop_sequence_ends_only_its_own_request(engine):
    prompt = engine.chat_prompt([{"role": "user", "content": QUESTIONS[0]}])
    _, stopped = _submit(engine, prompt, SamplingParams(temperature=0, stop=(" Paris",)))
    _, free = _submit(engine, prompt, SamplingParams(temperature=0, max_tokens=20))
    _wait_all(stopped, free)
    assert stopped.text == "The capital of France is"
    assert stopped.outcome.finish_reason == "stop"
    assert free.text.startswith("The capital of France is Paris")


def test_cancelling_one_request_leaves_the_others_generating(engine):
    counting = engine.text_prompt(COUNTING)
    generation, cancelled = _submit(engine, counting, SamplingParams(temperature=0,
                                                                     max_tokens=400))
    _, kept = _submit(engine, counting, SamplingParams(temperature=0, max_tokens=30))
    assert cancelled.first_text.wait(60)
    generation.cancel()
    _wait_all(cancelled, kept)
    assert cancelled.outcome.finish_reason == "cancelled"
    assert cancelled.outcome.completion_tokens < 400
    assert kept.outcome == Finished("length", kept.outcome.prompt_tokens, 30)
    assert kept.text.startswith(" 9, 10")


def test_a_forced_opening_applies_to_its_row_alone(engine):
    prompt = engine.chat_prompt([{"role": "user", "content": QUESTIONS[0]}])
    _, opening = engine.continuation_ids("", ["Bonjour! La capitale"])
    _, forced = _submit(engine, prompt, SamplingParams(temperature=0, max_tokens=12,
                                                       openings=opening))
    _, free = _submit(engine, prompt, SamplingParams(temperature=0, max_tokens=12))
    _wait_all(forced, free)
    assert forced.text.startswith("Bonjour! La capitale")
    assert free.text.startswith("The capital of France")


def test_a_queued_request_cancelled_before_its_turn_never_runs(smollm2_checkpoint, engine):  # noqa: F811
    one_row = TransformersEngine(engine.checkpoint, name="one", parallel=1, max_queue=2)
    try:
        _, running = _submit(one_row, one_row.text_prompt(COUNTING),
                             SamplingParams(temperature=0, max_tokens=30))
        waiting, dropped = _submit(one_row, one_row.text_prompt(COUNTING),
                                   SamplingParams(temperature=0, max_tokens=30))
        deadline = time.monotonic() + 30
        while one_row.stats().running != 1 or one_row.stats().waiting != 1:
            assert time.monotonic() < deadline, one_row.stats()
            time.sleep(0.01)
        waiting.cancel()
        _wait_all(running, dropped)
        assert dropped.outcome == Finished("cancelled", dropped.outcome.prompt_tokens, 0)
        assert running.outcome.completion_tokens == 30
    finally:
        one_row.close()


def test_a_checkpoint_the_batch_cannot_serve_falls_back_to_a_thread_each(engine):
    fallback = TransformersEngine(replace(engine.checkpoint, batch=BatchSupport(False, "test")),
                                  name="threads", parallel=2, max_queue=2)
    prompt = fallback.chat_prompt([{"role": "user", "content": QUESTIONS[0]}])
    completion = fallback.generate(prompt, SamplingParams(temperature=0, max_tokens=12))
    assert "Paris" in completion.text
    assert fallback.stats().batch.steps == 0  # generate() ran it, not the batch loop
    assert not fallback.batch.batched


def test_the_loaded_smollm2_is_batched(engine):
    assert engine.batch.batched
    assert unbatchable(engine.checkpoint.model) is None


@pytest.mark.parametrize("hf_config, generation_config, model_options, reason", [
    ({"model_type": "mistral", "sliding_window": 4096}, {}, {}, "sliding-window"),
    ({"layer_types": ["sliding_attention", "full_attention"]}, {}, {}, "sliding-window"),
    ({"is_encoder_decoder": True}, {}, {}, "encoder-decoder"),
    ({}, {"no_repeat_ngram_size": 3}, {}, "no_repeat_ngram_size"),
    ({}, {"num_beams": 4}, {}, "num_beams"),
    ({}, {}, {"trust_remote_code": True}, "trust_remote_code"),
])
def test_what_the_batch_cannot_serve_is_named(hf_config, generation_config, model_options,
                                              reason):
    support = batch_support(_model(Path("/m"), **model_options), hf_config, generation_config)
    assert not support.batched
    assert reason in support.reason


def test_plain_configs_are_batched_with_their_default_options():
    llama = {"model_type": "llama", "layer_types": ["full_attention"] * 2}
    qwen = {"model_type": "qwen2", "sliding_window": 32768, "use_sliding_window": False}
    defaults = {"num_beams": 1, "repetition_penalty": 1.1, "no_repeat_ngram_size": 0,
                "bad_words_ids": None}
    assert batch_support(_model(Path("/m")), llama, defaults).batched
    assert batch_support(_model(Path("/m")), qwen, {}).batched


def test_check_says_how_a_transformers_model_serves_concurrent_requests(
        smollm2_checkpoint, tmp_path):  # noqa: F811
    sliding = tmp_path / "sliding"
    sliding.mkdir()
    config = json.loads((smollm2_checkpoint / "config.json").read_text())
    (sliding / "config.json").write_text(json.dumps({**config, "sliding_window": 256}))
    (tmp_path / "modelport.yaml").write_text(
        "models:\n"
        f"  - {{name: batched, engine: transformers, path: '{smollm2_checkpoint}', "
        "parallel: 8}\n"
        f"  - {{name: threaded, engine: transformers, path: '{sliding}'}}\n")
    result = subprocess.run([sys.executable, "-m", "modelport", "check", "--config",
                             str(tmp_path / "modelport.yaml")], capture_output=True, text=True,
                            timeout=120, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin",
                                              "HOME": str(tmp_path)})
    assert "model 'batched': transformers batches up to 8 requests" in result.stdout, \
        result.stdout + result.stderr
    assert ("model 'threaded': transformers generates each request in its own thread "
            "(not batched: sliding-window") in result.stdout


def test_a_newcomer_whose_prefill_fails_fails_alone(engine, monkeypatch):
    from modelport.engines.transformers_kv import ModelStep

    forward = ModelStep.__call__

    def prefill_fails(self, input_ids, *args):
        if input_ids.shape[1] > 1:  # a prompt, not a decode step's one token per row
            raise RuntimeError("CUDA out of memory")
        return forward(self, input_ids, *args)

    _, running = _submit(engine, engine.text_prompt(COUNTING), SamplingParams(temperature=0,
                                                                             max_tokens=30))
    assert running.first_text.wait(60)
    monkeypatch.setattr(ModelStep, "__call__", prefill_fails)
    _, newcomer = _submit(engine, engine.text_prompt(COUNTING), SamplingParams(max_tokens=5))
    _wait_all(newcomer, running)
    assert "CUDA out of memory" in newcomer.outcome.error.message
    assert running.outcome == Finished("length", running.outcome.prompt_tokens, 30)
    assert engine.stats().in_flight == 0
