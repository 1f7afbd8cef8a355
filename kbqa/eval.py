"""Retrieval quality over a JSONL question set (the format in DESIGN.md).

A hit is a source from the gold file on a gold page; for files without pages, a source
from the gold file whose text holds every `must_contain` string. Unanswerable questions
are skipped for hit@k/MRR.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbqa.errors import KbqaError
from kbqa.schema import Source


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    question: str
    file: str | None
    pages: list[int] | None
    answer: str
    must_contain: list[str]
    unanswerable: bool


def load_questions(path: str | Path) -> list[Question]:
    out: list[Question] = []
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise KbqaError(f"{path}: cannot read question set ({exc.strerror})") from exc
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            out.append(Question(str(d["id"]), d["question"], d.get("file"), d.get("pages"), d.get("answer", ""),
                                list(d.get("must_contain") or []), bool(d.get("unanswerable", False))))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise KbqaError(f"{path}:{no}: not a valid question line ({exc})") from exc
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); 0.0 for no values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def _norm(text: str) -> str:
    return "".join(text.lower().split())


def is_hit(q: Question, s: Source) -> bool:
    if q.file is None or Path(s.file).name != Path(q.file).name:
        return False
    if q.pages:
        return s.page in q.pages
    return all(_norm(m) in _norm(s.text) for m in q.must_contain)


@dataclass(slots=True)
class RetrievalReport:
    n: int = 0
    hits_at: dict[int, float] = field(default_factory=dict)
    mrr: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"questions": self.n, **{f"hit@{k}": round(v, 4) for k, v in self.hits_at.items()},
                "mrr": round(self.mrr, 4), "search_p50_ms": round(percentile(self.latency_ms, 0.5), 2),
                "search_p95_ms": round(percentile(self.latency_ms, 0.95), 2), "misses": self.misses}


def evaluate_retrieval(
    questions: Sequence[Question], search: Callable[[str, int], list[Source]], ks: Sequence[int] = (1, 3, 5, 10)
) -> RetrievalReport:
    """hit@k and MRR (over the top max(ks)) of `search(question, k)` on answerable questions."""
    report = RetrievalReport()
    depth = max(ks)
    ranks: list[int | None] = []
    for q in questions:
        if q.unanswerable:
            continue
        t = time.perf_counter()
        sources = search(q.question, depth)
        report.latency_ms.append((time.perf_counter() - t) * 1000)
        rank = next((i for i, s in enumerate(sources, 1) if is_hit(q, s)), None)
        ranks.append(rank)
        if rank is None or rank > 5:
            report.misses.append(q.id)
    report.n = len(ranks)
    if ranks:
        report.hits_at = {k: sum(1 for r in ranks if r is not None and r <= k) / len(ranks) for k in ks}
        report.mrr = sum(1 / r for r in ranks if r is not None) / len(ranks)
    return report


def answer_correct(q: Question, text: str) -> bool:
    """Every `must_contain` string is in the answer (case- and whitespace-insensitive)."""
    norm = _norm(text)
    return bool(q.must_contain) and all(_norm(m) in norm for m in q.must_contain)


@dataclass(slots=True)
class AnswerReport:
    """Answer quality of `ask` over a question set (see `evaluate_answers`)."""

    answerable: int = 0
    unanswerable: int = 0
    correct: int = 0
    refused_right: int = 0
    refused_wrong: int = 0
    cited: int = 0
    cited_gold: int = 0
    modes: dict[str, int] = field(default_factory=dict)
    correct_by_mode: dict[str, int] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.answerable if self.answerable else 0.0

    @property
    def refusal_accuracy(self) -> float:
        return self.refused_right / self.unanswerable if self.unanswerable else 0.0

    @property
    def false_refusal_rate(self) -> float:
        return self.refused_wrong / self.answerable if self.answerable else 0.0

    @property
    def citation_precision(self) -> float:
        return self.cited_gold / self.cited if self.cited else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "answerable": self.answerable, "unanswerable": self.unanswerable,
            "answer_accuracy": round(self.accuracy, 4), "refusal_accuracy": round(self.refusal_accuracy, 4),
            "false_refusal_rate": round(self.false_refusal_rate, 4),
            "citation_precision": round(self.citation_precision, 4),
            "modes": self.modes, "correct_by_mode": self.correct_by_mode,
            "ask_p50_ms": round(percentile(self.latency_ms, 0.5), 1),
            "ask_p95_ms": round(percentile(self.latency_ms, 0.95), 1),
        }


def evaluate_answers(questions: Sequence[Question], ask: Callable[[str], Any]) -> AnswerReport:
    """Answer accuracy (all must_contain strings present), refusal accuracy on unanswerable
    questions, false refusals on answerable ones, and citation precision (cited sources from
    the gold file and page) of `ask(question) -> Answer`."""
    report = AnswerReport()
    for q in questions:
        t = time.perf_counter()
        ans = ask(q.question)
        report.latency_ms.append((time.perf_counter() - t) * 1000)
        report.modes[ans.mode] = report.modes.get(ans.mode, 0) + 1
        by_n = {s.n: s for s in ans.sources}
        cited = [by_n[n] for n in ans.cited if n in by_n]
        ok = False
        if q.unanswerable:
            report.unanswerable += 1
            report.refused_right += ans.refused
            ok = ans.refused
        else:
            report.answerable += 1
            report.refused_wrong += ans.refused
            ok = not ans.refused and answer_correct(q, ans.text)
            report.correct += ok
            if ok:
                report.correct_by_mode[ans.mode] = report.correct_by_mode.get(ans.mode, 0) + 1
            report.cited += len(cited)
            report.cited_gold += sum(1 for s in cited if is_hit(q, s))
        report.rows.append({"id": q.id, "ok": ok, "mode": ans.mode, "refused": ans.refused,
                            "answer": ans.text, "cited": [f"{s.file}:{s.page}" for s in cited], "note": ans.note})
    return report


def plot_report(data: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """A bar chart of the quality figures of a `kbqa eval` report, saved as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        from kbqa.errors import DependencyMissingError

        raise DependencyMissingError("matplotlib", "kbqa eval --plot") from exc
    retrieval, answers = data.get("retrieval", {}), data.get("answers", {})
    labels: list[str] = []
    values: list[float] = []
    for key in ("hit@1", "hit@3", "hit@5", "hit@10", "mrr"):
        if key in retrieval:
            labels.append(key.upper() if key == "mrr" else key)
            values.append(float(retrieval[key]))
    for key, label in (("answer_accuracy", "answer\naccuracy"), ("refusal_accuracy", "refusal\naccuracy"),
                       ("false_refusal_rate", "false\nrefusals"), ("citation_precision", "citation\nprecision")):
        if key in answers:
            labels.append(label)
            values.append(float(answers[key]))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels)), 3.6), dpi=120)
    colors = ["#4C78A8"] * sum(1 for lab in labels if lab.startswith(("hit", "MRR"))) + ["#F58518"] * (
        len(labels) - sum(1 for lab in labels if lab.startswith(("hit", "MRR"))))
    bars = ax.bar(labels, values, color=colors)
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("share of questions")
    ax.set_title(title or "kbqa eval", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
