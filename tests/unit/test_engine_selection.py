"""engine: auto picks llamacpp / vllm / transformers from the files and the hardware."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from modelport.config import AutoModel
from modelport.engines import selection
from modelport.engines.selection import (check_vllm_requested, choose_engine, gguf_file_in,
                                         gpu_available, vllm_available)
from modelport.errors import ConfigError


def auto_model(**fields) -> AutoModel:
    return AutoModel(name="m", engine="auto", path="x", **fields)


@pytest.fixture
def hf_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "Qwen2.5-0.5B-Instruct"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_a_gguf_file_goes_to_llamacpp(tmp_path):
    gguf = tmp_path / "SmolLM2.Q4_1.GGUF"
    gguf.write_bytes(b"GGUF")
    assert choose_engine(auto_model(), gguf, has_vllm=True, has_gpu=True) == ("llamacpp", None)


def test_a_folder_with_one_gguf_goes_to_llamacpp(tmp_path):
    (tmp_path / "model.Q4_K_M.gguf").write_bytes(b"GGUF")
    (tmp_path / "README.md").write_text("readme")
    assert choose_engine(auto_model(), tmp_path, has_vllm=False, has_gpu=False) == \
        ("llamacpp", None)
    assert gguf_file_in(tmp_path) == tmp_path / "model.Q4_K_M.gguf"


def test_a_split_gguf_counts_as_one_model_loaded_from_its_first_shard(tmp_path):
    for part in (1, 2, 3):
        (tmp_path / f"qwen-72b-q4-{part:05d}-of-00003.gguf").write_bytes(b"GGUF")
    assert gguf_file_in(tmp_path) == tmp_path / "qwen-72b-q4-00001-of-00003.gguf"


def test_several_gguf_models_in_a_folder_are_ambiguous(tmp_path):
    (tmp_path / "a.Q4_K_M.gguf").write_bytes(b"GGUF")
    (tmp_path / "a.Q8_0.gguf").write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match="several GGUF models.*a.Q4_K_M.gguf"):
        choose_engine(auto_model(), tmp_path, has_vllm=True, has_gpu=True)


def test_hf_checkpoint_goes_to_vllm_when_vllm_and_gpu_are_present(hf_folder):
    assert choose_engine(auto_model(), hf_folder, has_vllm=True, has_gpu=True) == ("vllm", None)


@pytest.mark.parametrize(("has_vllm", "has_gpu", "reason"), [
    (False, True, "vLLM is not installed"),
    (True, False, "no GPU was found"),
    (False, False, "vLLM is not installed and no GPU was found"),
])
def test_hf_checkpoint_falls_back_to_transformers_with_one_warning(hf_folder, has_vllm,
                                                                   has_gpu, reason):
    engine, warning = choose_engine(auto_model(), hf_folder, has_vllm=has_vllm, has_gpu=has_gpu)
    assert engine == "transformers"
    assert warning is not None and reason in warning and "'m'" in warning


def test_a_model_placed_on_cpu_uses_transformers_without_a_warning(hf_folder):
    assert choose_engine(auto_model(device="cpu"), hf_folder, has_vllm=True, has_gpu=True) == \
        ("transformers", None)


def test_something_else_is_a_config_error_saying_what_was_found(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"no config.json and no .gguf.*pytorch_model.bin"):
        choose_engine(auto_model(), tmp_path, has_vllm=True, has_gpu=True)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"\.safetensors file"):
        choose_engine(auto_model(), weights, has_vllm=True, has_gpu=True)
    with pytest.raises(ConfigError, match="does not exist"):
        choose_engine(auto_model(), tmp_path / "missing", has_vllm=True, has_gpu=True)


def test_engine_vllm_without_vllm_or_gpu_is_refused_clearly():
    check_vllm_requested(True, True)
    with pytest.raises(ConfigError, match="vllm package is not installed") as caught:
        check_vllm_requested(False, True, model_name="qwen")
    assert "model 'qwen'" in str(caught.value) and "engine: auto" in str(caught.value)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        check_vllm_requested(True, False)


def test_vllm_available_looks_without_importing():
    found = vllm_available()
    assert found is (selection.importlib.util.find_spec("vllm") is not None)
    assert "vllm" not in sys.modules


def test_no_gpu_driver_means_no_gpu_and_no_torch_import(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(selection, "_gpu_driver_present", lambda: False)
    monkeypatch.setattr(selection, "_torch_sees_gpu",
                        lambda: pytest.fail("torch must not be imported without a GPU driver"))
    started = time.monotonic()
    assert gpu_available() is False
    assert time.monotonic() - started < 0.5


def test_with_a_driver_torch_decides(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(selection, "_gpu_driver_present", lambda: True)
    monkeypatch.setattr(selection, "_module_installed", lambda name: True)
    monkeypatch.setattr(selection, "_torch_sees_gpu", lambda: False)
    assert gpu_available() is False
    monkeypatch.setattr(selection, "_torch_sees_gpu", lambda: True)
    assert gpu_available() is True
