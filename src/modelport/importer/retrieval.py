"""Embedding models and rerankers of the old config (part of the conversion in convert.py).

- `embedding_model_dict` paths that are relative resolve against the embeddings folder
  (`LOCAL_EM_MODEL_DIR`, else `<project>/embedding_models`), not the LLM folder, as the
  old service looked them up; `MODEL_PATH["embed_model"]` paths resolve like LLM paths;
- `MODEL_PATH["reranker"]` are cross-encoders (a GGUF one: llama.cpp with reranking);
  only `RERANKER_MODEL`, and only when `USE_RERANKER` is True, starts.
"""

from __future__ import annotations

import posixpath
from typing import Any

from modelport.importer.entries import ImportedModel, from_comment, label_of
from modelport.importer.pysource import EnvRef
from modelport.importer.workers import DEVICES

EMBEDDINGS_DIR_NAMES = ("LOCAL_EM_MODEL_DIR", "LOCAL_MODEL_DIR")


class RetrievalTables:
    """Methods of the converter for the embedding and reranker tables; the converter
    provides value, locate, mapping, add, skip, warn, `online` and `project`."""

    def embedding_models(self) -> None:
        sources = [(("embedding_model_dict",), self.mapping("embedding_model_dict")),
                   (("MODEL_PATH", "embed_model"),
                    mapping_of(self.mapping("MODEL_PATH").get("embed_model")))]
        device = self.value("EMBEDDING_DEVICE")
        for path_to_table, table in sources:
            for name, value in table.items():
                origin = self.locate(*path_to_table, name)
                name = str(name)
                if isinstance(value, dict):
                    value = value.get("local_model_path")
                if name.startswith("text-embedding-"):
                    self.add(self.online.openai_embedding(name, value, origin), origin)
                    continue
                if isinstance(value, EnvRef):
                    value = value.as_reference()
                if not isinstance(value, str) or not value:
                    self.skip(origin, "no usable path; skipped")
                    continue
                if path_to_table == ("embedding_model_dict",):
                    value = self.in_embeddings_dir(value)
                entry: dict[str, Any] = {"name": name, "engine": "sentence-transformers",
                                         "path": value}
                if device in DEVICES and device != "auto":
                    entry["device"] = device
                self.add(ImportedModel(entry, [from_comment(origin)], kind="embedding",
                                       origin=label_of(origin)), origin)

    def in_embeddings_dir(self, path: str) -> str:
        """The old service looked relative embedding paths up in its embeddings folder."""
        if path.startswith(("/", "~", "$", "pkg:")):
            return path
        folder = next((self.value(n) for n in EMBEDDINGS_DIR_NAMES
                       if isinstance(self.value(n), str) and self.value(n)), None)
        return posixpath.join(folder or posixpath.join(self.project, "embedding_models"), path)

    def rerankers(self) -> None:
        """The cross-encoders the old system loaded in its API server for its knowledge
        base; USE_RERANKER and RERANKER_MODEL chose the one it used."""
        table = mapping_of(self.mapping("MODEL_PATH").get("reranker"))
        used = self.value("RERANKER_MODEL") if self.value("USE_RERANKER") is True else None
        max_length = self.value("RERANKER_MAX_LENGTH")
        device = self.value("EMBEDDING_DEVICE")  # the old reranker ran on the embedding device
        for name, path in table.items():
            origin = self.locate("MODEL_PATH", "reranker", name)
            if isinstance(path, EnvRef):
                path = path.as_reference()
            if not isinstance(path, str) or not path:
                self.skip(origin, "no usable path; skipped")
                continue
            gguf = path.lower().endswith(".gguf")
            entry: dict[str, Any] = {"name": str(name), "path": path}
            entry.update({"engine": "llamacpp", "reranking": True} if gguf
                         else {"engine": "cross-encoder"})
            if not gguf and device in DEVICES and device != "auto":
                entry["device"] = device
            comments = [from_comment(origin)]
            if str(name) == used:
                if isinstance(max_length, int) and max_length >= 64:
                    entry["context_length" if gguf else "max_input_tokens"] = max_length
            else:
                entry["autostart"] = False
                comments.append("not the RERANKER_MODEL in use (USE_RERANKER); start it with "
                                "--model or set autostart: true")
            self.add(ImportedModel(entry, comments, kind="reranker", origin=label_of(origin)),
                     origin)
        if used is not None and str(used) not in table:
            self.warn(f"{self.where('RERANKER_MODEL')}: RERANKER_MODEL names {used!r}, which "
                      "is not in MODEL_PATH['reranker']")


def mapping_of(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}
