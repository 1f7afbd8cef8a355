"""Calibrate the refusal threshold (`answer.min_score`) on the bilingual dev set.

    python benchmarks/fetch_corpus.py en-manuals zh-docs      # once
    python benchmarks/calibrate_refusal.py [--model use-multilingual]

For every threshold t in 0.00..0.70 a question is refused when its best source scores below
t or it names something the knowledge base never mentions (`answer.refuse_unknown_terms`).
Prints refusal accuracy on unanswerable questions and the false-refusal rate on answerable
ones per language. Among the thresholds whose false-refusal rate stays within --max-false
(default 0.05) in every language — refusing wrongly costs a user an answer the documents
hold, which is worse than answering a near-miss with sources they can check — it takes those
with the best mean refusal accuracy and picks the middle of that range: the dev set cannot
tell them apart, and the middle keeps the widest margin on both sides.
Saves benchmarks/results/refusal-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kbqa.config import load_settings  # noqa: E402
from kbqa.eval import load_questions  # noqa: E402
from kbqa.kb import KnowledgeBase  # noqa: E402
from kbqa.prompts import detect_language  # noqa: E402
from kbqa.refusal import unknown_words  # noqa: E402

SETS = {"en": ("en-manuals", ROOT / "eval/dev_en.jsonl"), "zh": ("zh-docs", ROOT / "eval/dev_zh.jsonl")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="use-multilingual")
    ap.add_argument("--max-false", type=float, default=0.05)
    args = ap.parse_args()
    per_lang: dict[str, list[tuple[bool, float, bool]]] = {}
    for lang, (corpus, qfile) in SETS.items():
        folder = ROOT / "benchmarks/data" / corpus
        if not folder.is_dir():
            raise SystemExit(f"{folder}: missing; run: python benchmarks/fetch_corpus.py {corpus}")
        settings = load_settings(home=ROOT / "benchmarks/results/kbs" / f"{args.model}-default",
                                 embedding={"model": args.model})
        kb = KnowledgeBase.create(corpus, settings, exist_ok=True)
        kb.add(folder)
        retriever = kb.retriever()
        rows = []
        for q in load_questions(qfile):
            top = kb.search(q.question, k=1, min_score=0.0)
            unknown = unknown_words(q.question, detect_language(q.question), kb._tokenizer.terms,
                                    retriever.doc_freqs, retriever.has_phrase)
            rows.append((q.unanswerable, top[0].score if top else 0.0, bool(unknown)))
        per_lang[lang] = rows
    table = []
    for i in range(71):
        t = i / 100
        row: dict[str, float] = {"threshold": t}
        for lang, rows in per_lang.items():
            un = [(s, u) for a, s, u in rows if a]
            ans = [(s, u) for a, s, u in rows if not a]
            row[f"{lang}_refusal_acc"] = round(sum(s < t or u for s, u in un) / len(un), 3)
            row[f"{lang}_false_refusal"] = round(sum(s < t or u for s, u in ans) / len(ans), 3)
        table.append(row)
    ok = [r for r in table if all(r[f"{lang}_false_refusal"] <= args.max_false for lang in per_lang)] or table[:1]

    def refusal(r: dict[str, float]) -> float:
        return sum(r[f"{lang}_refusal_acc"] for lang in per_lang) / len(per_lang)

    top = max(refusal(r) for r in ok)
    tied = [r for r in ok if refusal(r) == top and r["threshold"] > 0]  # 0 would never refuse by score
    tied = tied or [r for r in ok if refusal(r) == top]
    best = tied[len(tied) // 2]
    print(f"{'t':>5} " + " ".join(f"{lang}: refuse-unans  false-refusal" for lang in per_lang))
    for r in table[::5] + ([best] if best not in table[::5] else []):
        mark = "  <- chosen" if r is best else ""
        print(f"{r['threshold']:5.2f} " + " ".join(
            f"{r[f'{lang}_refusal_acc']:>17.3f} {r[f'{lang}_false_refusal']:>14.3f}" for lang in per_lang) + mark)
    out = ROOT / "benchmarks/results" / f"refusal-{args.model}.json"
    print(f"thresholds {tied[0]['threshold']:.2f}..{tied[-1]['threshold']:.2f} are equally good on the dev set")
    out.write_text(json.dumps({"model": args.model, "max_false": args.max_false, "chosen": best,
                               "tied_range": [tied[0]["threshold"], tied[-1]["threshold"]], "sweep": table},
                              indent=1) + "\n")
    print(f"chosen answer.min_score = {best['threshold']:.2f}; saved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
