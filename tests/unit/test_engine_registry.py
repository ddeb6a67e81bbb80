"""The engine registry names every local engine of the config, with a loader that
resolves, and the gateway's capabilities follow it."""

from __future__ import annotations

import base64
import struct
from typing import get_args

import numpy as np

from modelport.config.model_kinds import MODEL_KINDS
from modelport.engines.echo import EchoEngine, hash_vector
from modelport.engines.registry import ENGINES
from modelport.openai_shapes import embeddings_response
from modelport.providers.capabilities import Capabilities
from modelport.config.local_models import EchoModel


def test_every_local_engine_of_the_config_is_registered_under_its_name():
    engines = {get_args(kind.model_fields["engine"].annotation)[0]: kind for kind in MODEL_KINDS}
    local = {name for name in engines if name not in ("auto", "openai", "plugin")}
    assert set(ENGINES) == local
    for name, spec in ENGINES.items():
        assert spec.config is engines[name]


def test_engines_served_by_the_worker_app_load_and_declare_what_the_registry_says():
    served = {name: spec for name, spec in ENGINES.items() if spec.load}
    assert set(served) == {"transformers", "sentence-transformers", "cross-encoder", "echo"}
    for spec in served.values():
        assert callable(spec.loader())
    echo = ENGINES["echo"].loader()(EchoModel(name="e", engine="echo"), None)
    assert isinstance(echo, EchoEngine) and echo.capabilities == ENGINES["echo"].capabilities


def test_capabilities_of_the_echo_engine_come_from_its_registry_line():
    capabilities = Capabilities.for_config(EchoModel(name="e", engine="echo"))
    assert (capabilities.chat, capabilities.completions, capabilities.embeddings) == (
        True, True, True)
    assert capabilities.rerank is None and not capabilities.vision


def test_embeddings_shape_encodes_numpy_rows_and_lists_to_the_same_base64():
    vector = hash_vector("x", 5)
    as_list = embeddings_response("m", [vector], "base64")["data"][0]["embedding"]
    as_numpy = embeddings_response("m", np.asarray([vector], dtype=np.float32),
                                   "base64")["data"][0]["embedding"]
    assert as_list == as_numpy
    assert struct.unpack("<5f", base64.b64decode(as_list)) == tuple(
        np.asarray(vector, dtype=np.float32).tolist())
    floats = embeddings_response("m", np.asarray([vector], dtype=np.float32), "float")
    assert isinstance(floats["data"][0]["embedding"], list)
