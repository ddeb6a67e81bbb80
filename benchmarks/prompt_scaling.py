#!/usr/bin/env python
"""Time to first token against prompt length, and prefix-cache reuse on a follow-up turn.

1. TTFT of one streaming request through modelport for prompts of about 100 .. 4,000 tokens.
2. A ~1,500-token conversation: TTFT of its first turn, then of a follow-up turn that repeats
   the conversation plus the answer and a new question (llama.cpp reuses the cached prefix).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SMOLLM2, ServeProcess, print_table, write_result  # noqa: E402

FILLER = ("The river ran past the old mill, where the miller counted sacks of grain and "
          "talked about the weather with anyone who would listen. ")  # ~25 tokens


def ttft(url: str, messages: list[dict], max_tokens: int = 16) -> tuple[float, str, int]:
    body = {"model": "bench", "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first, text, prompt_tokens = None, [], 0
    import json

    with httpx.stream("POST", url, json=body, timeout=300) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                prompt_tokens = event["usage"]["prompt_tokens"]
            for choice in event.get("choices", []):
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    first = first or time.perf_counter()
                    text.append(piece)
    return ((first or time.perf_counter()) - started), "".join(text), prompt_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="100,500,1000,2000,4000", help="approx prompt tokens")
    parser.add_argument("--conversation-tokens", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=3, help="runs per point (median kept)")
    args = parser.parse_args()
    serve = ServeProcess([{"name": "bench", "engine": "llamacpp", "path": SMOLLM2,
                           "parallel": 1, "context_length": 8192}]).start()
    url = serve.url + "/v1/chat/completions"
    report: dict = {"settings": vars(args), "ttft_by_length": [], "follow_up": {}}
    try:
        ttft(url, [{"role": "user", "content": "warm up"}])
        for target in [int(v) for v in args.lengths.split(",")]:
            samples = []
            for repeat in range(args.repeats):
                # A distinct first line per run defeats the prefix cache.
                text = f"Run {time.time_ns()}-{repeat}. " + FILLER * max(1, target // 25)
                seconds, _, tokens = ttft(url, [{"role": "user",
                                                  "content": text + "\nSummarize this."}])
                samples.append((seconds, tokens))
            samples.sort()
            seconds, tokens = samples[len(samples) // 2]
            report["ttft_by_length"].append({"target_tokens": target, "prompt_tokens": tokens,
                                             "ttft_ms": round(seconds * 1000, 1)})
        firsts, follows = [], []
        for repeat in range(args.repeats):
            history = [{"role": "system", "content": f"Session {time.time_ns()}. You are helpful."},
                       {"role": "user", "content": FILLER * (args.conversation_tokens // 25) +
                        "\nWhat did the miller count?"}]
            first_s, answer, first_tokens = ttft(url, history, max_tokens=32)
            history += [{"role": "assistant", "content": answer},
                        {"role": "user", "content": "And what did he talk about?"}]
            follow_s, _, follow_tokens = ttft(url, history)
            firsts.append((first_s, first_tokens))
            follows.append((follow_s, follow_tokens))
        first_s = sorted(firsts)[len(firsts) // 2]
        follow_s = sorted(follows)[len(follows) // 2]
        report["follow_up"] = {
            "first_turn": {"prompt_tokens": first_s[1], "ttft_ms": round(first_s[0] * 1000, 1)},
            "follow_up_turn": {"prompt_tokens": follow_s[1], "ttft_ms": round(follow_s[0] * 1000, 1)},
            "ratio": round(follow_s[0] / first_s[0], 3),
        }
    finally:
        serve.stop()
    print_table("TTFT against prompt length (through modelport)",
                ["target tokens", "prompt tokens", "ttft ms"],
                [[r["target_tokens"], r["prompt_tokens"], r["ttft_ms"]]
                 for r in report["ttft_by_length"]])
    f = report["follow_up"]
    print_table("prefix-cache reuse", ["turn", "prompt tokens", "ttft ms"], [
        ["first", f["first_turn"]["prompt_tokens"], f["first_turn"]["ttft_ms"]],
        ["follow-up", f["follow_up_turn"]["prompt_tokens"], f["follow_up_turn"]["ttft_ms"]]])
    print(f"follow-up / first = {f['ratio']}")
    print(f"\nwritten: {write_result('prompt_scaling', report)}")


if __name__ == "__main__":
    main()
