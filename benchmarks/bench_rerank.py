"""Warm search latency with and without the rerank stage, per rerank depth, in one process.

    python benchmarks/fetch_corpus.py en-manuals zh-docs      # once
    python benchmarks/eval_retrieval.py --models use-multilingual --modes hybrid   # once: builds the KBs
    python benchmarks/bench_rerank.py [--depths 5 10 20 40] [--repeat 2]

Every dev question is searched (k = 5) with `retrieval.reranker: none` and with the bundled
reranker at each depth, after one warm-up query per setting; p50/p95 per language go to
benchmarks/results/rerank-latency.json. Chinese questions never reach the English model,
so their figures measure the pass-through. Shared CPUs are noisy: compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kbqa.config import load_settings  # noqa: E402
from kbqa.eval import load_questions  # noqa: E402
from kbqa.kb import KnowledgeBase  # noqa: E402

SETS = {"en": ("en-manuals", ROOT / "eval/dev_en.jsonl"), "zh": ("zh-docs", ROOT / "eval/dev_zh.jsonl")}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="use-multilingual")
    ap.add_argument("--depths", nargs="+", type=int, default=[5, 10, 20, 40])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/rerank-latency.json")
    args = ap.parse_args()
    home = ROOT / "benchmarks/results/kbs" / f"{args.model}-default"
    rows: list[dict[str, Any]] = []
    for lang, (corpus, qfile) in SETS.items():
        questions = [q.question for q in load_questions(qfile)]
        for reranker, depth in [("none", 0)] + [("auto", d) for d in args.depths]:
            settings = load_settings(home=home, embedding={"model": args.model},
                                     retrieval={"reranker": reranker, "rerank_depth": max(1, depth)})
            kb = KnowledgeBase.open(corpus, settings)
            kb.search("warm up the models", k=5)
            times = []
            for _ in range(args.repeat):
                for q in questions:
                    t = time.perf_counter()
                    kb.search(q, k=5)
                    times.append((time.perf_counter() - t) * 1000)
            kb.close()
            row = {"lang": lang, "reranker": reranker, "depth": depth, "queries": len(times),
                   "p50_ms": round(statistics.median(times), 1), "p95_ms": pct(times, 0.95)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    args.out.write_text(json.dumps({"cpus": os.cpu_count(), "load_at_end": load, "rows": rows}, indent=1) + "\n",
                        encoding="utf-8")


if __name__ == "__main__":
    main()
