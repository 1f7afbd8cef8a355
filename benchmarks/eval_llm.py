"""Which answering model should be the default? Quality and speed per model and language (issue 12).

    python benchmarks/fetch_corpus.py en-manuals zh-docs      # once
    python benchmarks/eval_llm.py [--models extractive qwen2.5-1.5b qwen2.5-0.5b smollm2] [--langs en zh]
                                  [--limit N]

For each model: answer accuracy (every must_contain string present), refusal accuracy on the
unanswerable questions, false-refusal rate, citation precision (cited sources on the gold
file/page), time to first token and total time per question (p50/p95, in one process with
the model loaded once, as the app and the API run), and the peak RSS of one cold `kbqa ask`
process (`/usr/bin/time -f %M`). Everything else is the shipped default (hybrid retrieval,
refusal gate, `answer.context_tokens`, `llm.threads`). Saves benchmarks/results/llm-models.json
(with every answer, for reading) and prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kbqa.config import load_settings  # noqa: E402
from kbqa.eval import evaluate_answers, load_questions  # noqa: E402
from kbqa.kb import KnowledgeBase  # noqa: E402
from kbqa.schema import Answer  # noqa: E402

SETS = {"en": ("en-manuals", ROOT / "eval/dev_en.jsonl"), "zh": ("zh-docs", ROOT / "eval/dev_zh.jsonl")}
MODELS = ["extractive", "qwen2.5-1.5b", "qwen2.5-0.5b", "smollm2", "qwen2.5-1.5b+guard"]
"""`+guard`: the same model with `answer.small_model_guard: on` (its sentences replaced by source-backed
ones, quotes under them) — to measure whether the 1.5B model still needs the small-model guard."""
HOME = ROOT / "benchmarks/results/kbs/llm-eval"


def _llm(model: str) -> dict[str, Any]:
    name = model.removesuffix("+guard")
    return {"backend": "extractive"} if name == "extractive" else {"backend": "bundled", "model": name}


def _answer(model: str) -> dict[str, Any]:
    return {"small_model_guard": "on"} if model.endswith("+guard") else {}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def _first_token_ms(ans: Answer) -> float:
    """From the question to the first answer text: retrieval (+ condense) + the model's first token."""
    t = ans.timings_ms
    if "first_token" not in t:
        return float(t.get("total", 0.0))
    return float(t.get("total", 0.0)) - float(t.get("generate", 0.0)) + float(t["first_token"])


def _peak_rss_mb(model: str, corpus: str, question: str) -> float:
    env = {**os.environ, "KBQA_HOME": str(HOME)}
    for k, v in _llm(model).items():
        env[f"KBQA_LLM__{k.upper()}"] = v
    for k, v in _answer(model).items():
        env[f"KBQA_ANSWER__{k.upper()}"] = v
    run = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "kbqa.cli", "ask", question,
                          "--kb", corpus, "--json"], env=env, capture_output=True, text=True, timeout=600)
    return int(run.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--langs", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--limit", type=int, default=0, help="first N questions per language (0 = all)")
    ap.add_argument("--no-rss", action="store_true", help="skip the cold `kbqa ask` RSS measurement")
    args = ap.parse_args()
    out = ROOT / "benchmarks/results/llm-models.json"
    rows: list[dict[str, Any]] = []
    for lang in args.langs:
        corpus, qfile = SETS[lang]
        folder = ROOT / "benchmarks/data" / corpus
        if not folder.is_dir():
            raise SystemExit(f"{folder}: missing; run: python benchmarks/fetch_corpus.py {corpus}")
        questions = load_questions(qfile)
        if args.limit:
            questions = questions[: args.limit]
        for model in args.models:
            settings = load_settings(home=HOME, llm=_llm(model), answer=_answer(model))
            answers: list[Answer] = []
            with KnowledgeBase.create(corpus, settings, exist_ok=True) as kb:
                kb.add(folder)

                def ask(question: str, kb: KnowledgeBase = kb, answers: list[Answer] = answers) -> Answer:
                    ans = kb.ask(question)
                    answers.append(ans)
                    return ans

                ask(questions[0].question)  # load the model before timing (the app and API keep it loaded)
                answers.clear()
                report = evaluate_answers(questions, ask)
            first = [_first_token_ms(a) for a in answers]
            total = [float(a.timings_ms.get("total", 0.0)) for a in answers]
            answered = next(q.question for q in questions if not q.unanswerable)
            rss = 0.0 if args.no_rss else _peak_rss_mb(model, corpus, answered)
            data = report.to_json()
            row = {"lang": lang, "model": model, "questions": len(questions),
                   "answer_accuracy": data["answer_accuracy"], "refusal_accuracy": data["refusal_accuracy"],
                   "false_refusal_rate": data["false_refusal_rate"], "citation_precision": data["citation_precision"],
                   "first_token_p50_ms": _pct(first, 0.5), "first_token_p95_ms": _pct(first, 0.95),
                   "total_p50_ms": statistics.median(total), "total_p95_ms": _pct(total, 0.95),
                   "peak_rss_mb": round(rss), "modes": data["modes"], "answers": report.rows}
            rows.append(row)
            _save(out, rows)
            print(_line(row), flush=True)
    print("\n| lang | model | answer acc | refusal acc | false refusals | citation precision | first token p50/p95 "
          "| total p50/p95 | peak RSS |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['lang']} | {r['model']} | {r['answer_accuracy']:.2f} | {r['refusal_accuracy']:.2f} | "
              f"{r['false_refusal_rate']:.2f} | {r['citation_precision']:.2f} | "
              f"{r['first_token_p50_ms'] / 1000:.1f} / {r['first_token_p95_ms'] / 1000:.1f} s | "
              f"{r['total_p50_ms'] / 1000:.1f} / {r['total_p95_ms'] / 1000:.1f} s | {r['peak_rss_mb']} MB |")
    print(f"saved {out.relative_to(ROOT)}")


def _line(r: dict[str, Any]) -> str:
    return (f"{r['lang']} {r['model']:13s} acc {r['answer_accuracy']:.3f} refusal {r['refusal_accuracy']:.3f} "
            f"false-refusal {r['false_refusal_rate']:.3f} cite {r['citation_precision']:.3f} "
            f"first p50 {r['first_token_p50_ms']:.0f} ms total p50 {r['total_p50_ms']:.0f} p95 "
            f"{r['total_p95_ms']:.0f} ms rss {r['peak_rss_mb']} MB modes {r['modes']}")


def _save(out: Path, rows: list[dict[str, Any]]) -> None:
    """Merge into the saved results by (lang, model), so a partial rerun keeps the other rows."""
    old = json.loads(out.read_text()) if out.exists() and out.read_text().strip().startswith("[") else []
    keys = {(r["lang"], r["model"]) for r in rows}
    merged = [r for r in old if (r.get("lang"), r.get("model")) not in keys] + rows
    out.write_text(json.dumps(merged, ensure_ascii=False, indent=1) + "\n")


if __name__ == "__main__":
    main()
