"""Reading /metrics the way Prometheus would: with prometheus_client's own text parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple], float]

# An upstream's answers, each carrying 10 tokens of usage, for counting tests.
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
ANSWER = {"id": "c1", "object": "chat.completion", "created": 0, "model": "remote",
          "choices": [{"index": 0, "finish_reason": "stop",
                       "message": {"role": "assistant", "content": "Hi"}}], "usage": USAGE}
CHUNK = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "remote",
         "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
USAGE_CHUNK = {**CHUNK, "choices": [], "usage": USAGE}


def parse_samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)
