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
