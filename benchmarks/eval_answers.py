"""Answer quality per mode and language on the bilingual dev set (issue 3's figures).

    python benchmarks/fetch_corpus.py en-manuals zh-docs      # once
    python benchmarks/eval_answers.py [--modes auto extractive llm] [--langs en zh]

Modes: `auto` = the default (bundled LLM held to its sources — `answer.small_model_guard` —
with the extractive fallback when it cannot serve the language or cites nothing),
`extractive` = no LLM, `llm` = the bundled LLM's raw answer (no guard, no fallback, also on
Chinese questions). Reports answer accuracy (every must_contain string present),
refusal accuracy on unanswerable questions, false-refusal rate, citation precision and ask
latency. Saves benchmarks/results/answers-<model>.json (with every answer, for reading).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kbqa.config import load_settings  # noqa: E402
from kbqa.eval import evaluate_answers, load_questions  # noqa: E402
from kbqa.kb import KnowledgeBase  # noqa: E402

SETS = {"en": ("en-manuals", ROOT / "eval/dev_en.jsonl"), "zh": ("zh-docs", ROOT / "eval/dev_zh.jsonl")}
MODES = {  # mode: (llm.backend, answer.fallback, answer.small_model_guard)
    "auto": ("bundled", "auto", "auto"),
    "extractive": ("extractive", "auto", "auto"),
    "llm": ("bundled", "never", "off"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="use-multilingual")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--langs", nargs="+", default=list(SETS), choices=list(SETS))
    args = ap.parse_args()
    out = ROOT / "benchmarks/results" / f"answers-{args.model}.json"
    rows: list[dict[str, Any]] = []
    for lang in args.langs:
        corpus, qfile = SETS[lang]
        folder = ROOT / "benchmarks/data" / corpus
        if not folder.is_dir():
            raise SystemExit(f"{folder}: missing; run: python benchmarks/fetch_corpus.py {corpus}")
        questions = load_questions(qfile)
        for mode in args.modes:
            backend, fallback, guard = MODES[mode]
            settings = load_settings(home=ROOT / "benchmarks/results/kbs" / f"{args.model}-default",
                                     embedding={"model": args.model}, llm={"backend": backend},
                                     answer={"fallback": fallback, "small_model_guard": guard})
            with KnowledgeBase.create(corpus, settings, exist_ok=True) as kb:
                kb.add(folder)
                report = evaluate_answers(questions, kb.ask)
            row = {"lang": lang, "mode": mode, **report.to_json(), "answers": report.rows}
            rows.append(row)
            _save(out, rows)
            print(f"{lang} {mode:10s} accuracy {row['answer_accuracy']:.3f}  refusal {row['refusal_accuracy']:.3f}  "
                  f"false-refusal {row['false_refusal_rate']:.3f}  citation-precision {row['citation_precision']:.3f}  "
                  f"ask p50 {row['ask_p50_ms']:.0f} ms p95 {row['ask_p95_ms']:.0f} ms  modes {row['modes']}",
                  flush=True)
    print(f"saved {out.relative_to(ROOT)}")


def _save(out: Path, rows: list[dict[str, Any]]) -> None:
    """Merge into the saved results by (lang, mode), so a partial rerun keeps the other rows."""
    old = json.loads(out.read_text()) if out.exists() else []
    keys = {(r["lang"], r["mode"]) for r in rows}
    merged = [r for r in old if (r["lang"], r["mode"]) not in keys] + rows
    merged.sort(key=lambda r: (r["lang"], list(MODES).index(r["mode"])))
    out.write_text(json.dumps(merged, ensure_ascii=False, indent=1) + "\n")


if __name__ == "__main__":
    main()
