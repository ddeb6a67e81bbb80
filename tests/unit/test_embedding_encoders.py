"""The embedding engine's own BERT encoder against sentence-transformers on the real
all-MiniLM-L6-v2 files, and the choice between them (engines/embedding_plan.py): which
folders the own encoder serves, and the fallback to sentence-transformers for the rest."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelport.config import SentenceTransformersModel
from modelport.config.locations import resolve_location
from modelport.engines.batching import padded_batches
from modelport.engines.embedding_plan import encoder_choice
from modelport.engines.embeddings import EmbeddingEngine
from support.models import EMBED, MINILM

MINILM_DIR = resolve_location(MINILM, Path("."), EMBED)
TEXTS = [
    "Hello! What is your name?",
    "Ünïcödé àccents in Straße and Ærøskøbing",
    "中文句子也要测试一下，嵌入向量应当一致。",
    "UPPER lower MiXeD 123 !! ?? ... (brackets) [and] {braces}",
    "emoji 😀 and symbols ∑ ∫ √ between words",
    "tab\tnew\nline and   many    spaces",
    "",
    "word " * 250,  # near the 256-token limit: the longest row of its batch
]


def _folder(tmp_path: Path, pooling: dict | None = None, normalize: bool = True,
            **changes: dict) -> Path:
    """A copy of MiniLM's folder (the weights linked) with another pooling config, without
    its Normalize module, or with keys of its JSON files changed ({file name: keys})."""
    folder = tmp_path / "model"
    shutil.copytree(MINILM_DIR, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    (folder / "model.safetensors").symlink_to(MINILM_DIR / "model.safetensors")
    if pooling is not None:
        (folder / "1_Pooling/config.json").write_text(json.dumps(pooling))
    if not normalize:
        modules = json.loads((folder / "modules.json").read_text())[:2]
        (folder / "modules.json").write_text(json.dumps(modules))
    for name, keys in changes.items():
        data = json.loads((folder / name).read_text())
        data.update(keys)
        (folder / name).write_text(json.dumps(data))
    return folder


# Pooling configs as sentence-transformers writes them: its older flags, and `pooling_mode`.
CLS_FLAGS = {"word_embedding_dimension": 384, "pooling_mode_cls_token": True,
             "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False}
MAX_MODE = {"embedding_dimension": 384, "pooling_mode": "max", "include_prompt": True}
SQRT_LEN = {"word_embedding_dimension": 384, "pooling_mode_mean_sqrt_len_tokens": True}


def _engine(folder: Path) -> EmbeddingEngine:
    return EmbeddingEngine(SentenceTransformersModel(
        name=EMBED, engine="sentence-transformers", path=str(folder), device="cpu"), folder)


def _sentence_transformer(folder: Path):  # noqa: ANN202 - a SentenceTransformer
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


def _reference(folder: Path, model=None) -> np.ndarray:  # noqa: ANN001
    """sentence-transformers' own vectors for TEXTS from the folder (its encode())."""
    model = model or _sentence_transformer(folder)
    return model.encode(TEXTS, convert_to_numpy=True)


@pytest.fixture(scope="module")
def minilm():  # noqa: ANN201 - (SentenceTransformer, its vectors for TEXTS)
    model = _sentence_transformer(MINILM_DIR)
    return model, _reference(MINILM_DIR, model)


def _batched(engine: EmbeddingEngine) -> np.ndarray:
    """The engine's vectors for TEXTS encoded together (padded batches, as it serves them)."""
    import torch

    sequences = engine.encoder.token_ids(TEXTS)
    vectors = np.empty((len(TEXTS), engine.dimensions), dtype=np.float32)
    with torch.inference_mode():
        for chunk, input_ids, mask in padded_batches(sequences, 4, 0, engine._pad_id):
            vectors[chunk] = engine.encoder.forward(input_ids, mask).numpy()
    return vectors


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_minilm_is_served_by_the_own_encoder_with_sentence_transformers_vectors(minilm):
    engine = _engine(MINILM_DIR)
    assert engine.encoder.kind == "modelport's BERT encoder"
    reference, expected = minilm
    assert engine.encoder.token_ids(TEXTS) == reference.tokenizer(TEXTS)["input_ids"]
    assert (engine.dimensions, engine.max_tokens, engine.vocab_size, engine._pad_id) == \
        (384, 256, reference.tokenizer.vocab_size, reference.tokenizer.pad_token_id)
    assert (engine._prefix, engine._suffix) == ([101], [102])  # [CLS] ... [SEP]
    ours = _batched(engine)
    assert _cosines(ours, expected).min() >= 0.999
    assert np.abs(ours - expected).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("pooling, normalize", [(CLS_FLAGS, False), (MAX_MODE, True)])
def test_other_pooling_modes_match_sentence_transformers(tmp_path, pooling, normalize):
    folder = _folder(tmp_path, pooling, normalize)
    engine = _engine(folder)
    assert engine.encoder.kind == "modelport's BERT encoder"
    ours, expected = _batched(engine), _reference(folder)
    assert _cosines(ours, expected).min() >= 0.999
    assert np.abs(ours - expected).max() < 1e-4 * np.abs(expected).max()


def test_a_folder_the_own_encoder_cannot_serve_loads_sentence_transformers(tmp_path, minilm):
    folder = _folder(tmp_path, SQRT_LEN)
    choice = encoder_choice(folder)
    assert choice.plan is None and "pooling" in choice.reason
    engine = _engine(folder)
    assert engine.encoder.kind == "sentence-transformers"
    # Normalized, a sum over sqrt(length) is the normalized mean: MiniLM's own vectors.
    assert np.abs(_batched(engine) - minilm[1]).max() < 1e-5


def test_weights_the_own_encoder_cannot_read_load_sentence_transformers(tmp_path, minilm):
    """JSON files of a BERT, weights under the old LayerNorm names (gamma, beta), which
    transformers still reads: the engine falls back instead of failing to start."""
    from safetensors.torch import load_file, save_file

    folder = _folder(tmp_path)
    tensors = load_file(str(MINILM_DIR / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    save_file({name.replace("LayerNorm.weight", "LayerNorm.gamma")
               .replace("LayerNorm.bias", "LayerNorm.beta"): tensor
               for name, tensor in tensors.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    assert encoder_choice(folder).plan is not None  # the JSON files alone promise a BERT
    engine = _engine(folder)
    assert engine.encoder.kind == "sentence-transformers"
    assert np.abs(_batched(engine) - minilm[1]).max() < 1e-5


@pytest.mark.parametrize("changes, reason", [
    ({"config.json": {"model_type": "xlm-roberta"}}, "not a BERT"),
    ({"config.json": {"hidden_act": "gelu_new"}}, "hidden_act 'gelu_new'"),
    ({"config.json": {"position_embedding_type": "relative_key"}}, "position_embedding_type"),
    ({"config.json": {"torch_dtype": "float16"}}, "dtype 'float16'"),
    ({"sentence_bert_config.json": {"do_lower_case": True}}, "do_lower_case True"),
    ({"sentence_bert_config.json": {"processing_kwargs": {"text": {"truncation": True}}}},
     "processing_kwargs"),
    ({"1_Pooling/config.json": {"include_prompt": False}}, "pooling"),
])
def test_the_choice_names_why_sentence_transformers_serves_a_folder(tmp_path, changes, reason):
    choice = encoder_choice(_folder(tmp_path, **changes))
    assert choice.plan is None and reason in choice.reason
    assert choice.describe("m") == f"model 'm': embeddings by sentence-transformers ({choice.reason})"


def test_unknown_modules_or_missing_files_mean_sentence_transformers(tmp_path):
    folder = _folder(tmp_path)
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense",
                       "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    assert "Transformer, Pooling, Dense, Normalize" in encoder_choice(folder).reason
    (folder / "modules.json").unlink()
    assert encoder_choice(folder).reason == "no modules.json (or not a list of modules)"
    other = _folder(tmp_path / "b")
    (other / "tokenizer.json").unlink()
    assert encoder_choice(other).reason == "the transformer folder has no tokenizer.json"


def test_the_default_prompt_is_prepended_as_sentence_transformers_does(tmp_path, minilm):
    folder = _folder(tmp_path, **{"config_sentence_transformers.json": {
        "prompts": {"query": "query: "}, "default_prompt_name": "query"}})
    assert encoder_choice(folder).plan.prompt == "query: "
    engine = _engine(folder)

    async def embed() -> np.ndarray:
        await engine.start()
        try:
            return (await engine.embed(TEXTS[:3])).vectors
        finally:
            await engine.stop()

    expected = _reference(folder)[:3]  # encode() prepends the default prompt itself
    assert np.abs(asyncio.run(embed()) - expected).max() < 1e-5
    assert np.abs(minilm[1][:3] - expected).max() > 1e-3  # the prompt changes the vectors


def test_worker_does_not_import_sentence_transformers_nor_transformers_for_minilm():
    """What the start-up time depends on: loading MiniLM imports torch and tokenizers only."""
    code = ("import sys; from pathlib import Path\n"
            "from modelport.workers.embedding_worker import load\n"
            "from modelport.config import SentenceTransformersModel as M\n"
            f"load(M(name='e', engine='sentence-transformers', path='{MINILM}'), "
            f"Path('{MINILM_DIR}'))\n"
            "print(sorted(m for m in ('sentence_transformers', 'transformers', 'torch') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "['torch']"


def test_check_says_which_encoder_serves_each_embedding_model(tmp_path):
    fallback = _folder(tmp_path, SQRT_LEN)
    (tmp_path / "modelport.yaml").write_text(
        "models:\n"
        f"  - {{name: native, engine: sentence-transformers, path: '{MINILM_DIR}'}}\n"
        f"  - {{name: fallback, engine: sentence-transformers, path: '{fallback}'}}\n")
    result = subprocess.run([sys.executable, "-m", "modelport", "check", "--config",
                             str(tmp_path / "modelport.yaml")], capture_output=True, text=True,
                            timeout=120, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin",
                                              "HOME": str(tmp_path)})
    assert "model 'native': embeddings by modelport's own BERT encoder (mean pooling, " \
           "normalized" in result.stdout, result.stdout + result.stderr
    assert "model 'fallback': embeddings by sentence-transformers (its pooling is not one of " \
           "mean, CLS or max" in result.stdout
