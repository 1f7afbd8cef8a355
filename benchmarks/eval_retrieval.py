"""Retrieval quality of embedding models × retrieval modes on the bilingual dev set.

    python benchmarks/fetch_corpus.py en-manuals zh-docs      # once
    python benchmarks/eval_retrieval.py --models use-multilingual minilm

Builds one knowledge base per (model, corpus) under benchmarks/results/kbs/ (reused on
the next run: indexing is incremental) and prints hit@1/3/5/10 and MRR for the dense,
keyword and hybrid modes, EN and ZH. Saves benchmarks/results/retrieval.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kbqa.config import load_settings  # noqa: E402
from kbqa.eval import evaluate_retrieval, load_questions  # noqa: E402
from kbqa.kb import KnowledgeBase  # noqa: E402

SETS = {"en": ("en-manuals", ROOT / "eval/dev_en.jsonl"), "zh": ("zh-docs", ROOT / "eval/dev_zh.jsonl")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["use-multilingual", "minilm"])
    ap.add_argument("--modes", nargs="+", default=["dense", "keyword", "hybrid"])
    ap.add_argument("--langs", nargs="+", default=["en", "zh"])
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/retrieval.json")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    for model in args.models:
        for lang in args.langs:
            corpus, qfile = SETS[lang]
            folder = ROOT / "benchmarks/data" / corpus
            if not folder.is_dir():
                raise SystemExit(f"{folder}: missing; run: python benchmarks/fetch_corpus.py {corpus}")
            splitter = {"chunk_size": args.chunk_size} if args.chunk_size else {}
            tag = f"{model.replace('/', '_')}-{args.chunk_size or 'default'}"
            settings = load_settings(home=ROOT / "benchmarks/results/kbs" / tag, embedding={"model": model},
                                     splitter=splitter)
            kb = KnowledgeBase.create(corpus, settings, exist_ok=True)
            t = time.perf_counter()
            report = kb.add(folder)
            build_s = time.perf_counter() - t
            questions = load_questions(qfile)
            for mode in args.modes:
                kb.settings.retrieval.mode = mode
                r = evaluate_retrieval(questions, kb.search)
                row = {"model": kb.embeddings.model_id, "lang": lang, "mode": mode, **r.to_json(),
                       "chunks": kb.store.count(), "build_s": round(build_s, 1),
                       "embedded": report.chunks_embedded}
                rows.append(row)
                print(f"{row['model']:<28} {lang} {mode:<8} hit@1 {row['hit@1']:.3f} hit@3 {row['hit@3']:.3f} "
                      f"hit@5 {row['hit@5']:.3f} hit@10 {row['hit@10']:.3f} MRR {row['mrr']:.3f} "
                      f"p50 {row['search_p50_ms']:.1f} ms  (n={row['questions']}, chunks={row['chunks']})",
                      flush=True)
            kb.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
