"""Sweep the fusion settings on the dev set, reusing the KBs that eval_retrieval.py built.

    python benchmarks/eval_retrieval.py --models use-multilingual     # builds the KBs once
    python benchmarks/sweep_fusion.py --model use-multilingual

Prints hit@5 and MRR (EN, ZH, mean) for each combination of dense weight, cosine
floor/ceiling and fusion rule, best first; saves benchmarks/results/sweep-<model>.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval_retrieval import SETS  # noqa: E402  (this script's folder is on sys.path)

from kbqa.config import load_settings  # noqa: E402
from kbqa.eval import evaluate_retrieval, load_questions  # noqa: E402
from kbqa.kb import KnowledgeBase  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="use-multilingual")
    args = ap.parse_args()
    home = ROOT / "benchmarks/results/kbs" / f"{args.model.replace('/', '_')}-default"
    settings = load_settings(home=home, embedding={"model": args.model})
    emb = None
    kbs = {}
    for lang, (corpus, qfile) in SETS.items():
        kb = KnowledgeBase.open(corpus, settings.model_copy(deep=True), embeddings=emb)
        emb = kb.embeddings
        kbs[lang] = (kb, load_questions(qfile))
    rows = []
    grid = itertools.product(["linear", "rrf"], [0.25, 0.5, 1.0, 2.0], [0.0, 0.1, 0.2], [0.6, 0.8], [20, 40])
    for fusion, wd, floor, ceiling, fetch_k in grid:
        if fusion == "rrf" and (floor, ceiling) != (0.1, 0.6):
            continue  # the cosine mapping does not change RRF's order
        row: dict[str, object] = {"fusion": fusion, "dense_weight": wd, "dense_floor": floor,
                                  "dense_ceiling": ceiling, "fetch_k": fetch_k}
        for lang, (kb, qs) in kbs.items():
            r = kb.settings.retrieval
            r.fusion, r.dense_weight, r.dense_floor, r.dense_ceiling, r.fetch_k = fusion, wd, floor, ceiling, fetch_k
            rep = evaluate_retrieval(qs, kb.search).to_json()
            row[f"{lang}_hit@5"], row[f"{lang}_mrr"] = rep["hit@5"], rep["mrr"]
        row["mean_hit@5"] = round((row["en_hit@5"] + row["zh_hit@5"]) / 2, 4)  # type: ignore[operator]
        row["mean_mrr"] = round((row["en_mrr"] + row["zh_mrr"]) / 2, 4)  # type: ignore[operator]
        rows.append(row)
    rows.sort(key=lambda r: (r["mean_mrr"], r["mean_hit@5"]), reverse=True)  # type: ignore[arg-type,return-value]
    for r in rows[:15]:
        print(json.dumps(r))
    out = ROOT / "benchmarks/results" / f"sweep-{args.model.replace('/', '_')}.json"
    out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    print(f"saved {out.relative_to(ROOT)} ({len(rows)} combinations)")


if __name__ == "__main__":
    main()
