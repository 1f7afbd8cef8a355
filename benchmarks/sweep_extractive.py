"""Sweep the extractive answer's size: sentences kept × how close to the best one they must score.

    python benchmarks/sweep_extractive.py       # needs the dev-set KBs (benchmarks/eval_retrieval.py builds them)

Prints answer accuracy and citation precision on the bilingual dev set for every pair and
saves benchmarks/results/sweep-extractive.json. The defaults (`answer.extractive_sentences`,
`EXTRACT_MIN_RATIO` in kbqa/qa.py) were picked from this table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kbqa import qa  # noqa: E402
from kbqa.config import load_settings  # noqa: E402
from kbqa.eval import evaluate_answers, load_questions  # noqa: E402
from kbqa.kb import KnowledgeBase  # noqa: E402

SETS = {"en": "en-manuals", "zh": "zh-docs"}


def main() -> None:
    rows = []
    for lang, corpus in SETS.items():
        settings = load_settings(home=ROOT / "benchmarks/results/kbs/use-multilingual-default",
                                 llm={"backend": "extractive"})
        kb = KnowledgeBase.open(corpus, settings)
        questions = load_questions(ROOT / f"eval/dev_{lang}.jsonl")
        for ratio in (0.5, 0.6, 0.7, 0.8, 0.9):
            for n in (2, 3, 4, 5):
                kb.settings.answer.extractive_sentences = n
                qa.EXTRACT_MIN_RATIO = ratio
                r = evaluate_answers(questions, kb.ask).to_json()
                rows.append({"lang": lang, "min_ratio": ratio, "sentences": n,
                             "answer_accuracy": r["answer_accuracy"], "citation_precision": r["citation_precision"]})
                print(f"{lang} ratio {ratio:.1f} sentences {n}: accuracy {r['answer_accuracy']:.3f} "
                      f"citation precision {r['citation_precision']:.3f}", flush=True)
    out = ROOT / "benchmarks/results/sweep-extractive.json"
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"saved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
