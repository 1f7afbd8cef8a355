"""Hybrid retrieval: dense (FAISS) + keyword (FTS5 BM25), fused, one 0–1 relevance score.

Candidates are the union of the dense top-n and the keyword top-n. Every candidate is
then scored on both signals, so a chunk found by only one index still gets an honest
value on the other:

- dense relevance: cosine mapped linearly from the model's typical [floor, ceiling]
  range onto [0, 1] (`retrieval.dense_floor/ceiling`; `auto` = the embedding model's
  `dense_range`);
- keyword relevance: the idf-weighted share of the query's terms the chunk contains.

The shown score is their weighted mean (a convex combination: unlike RRF it is an
absolute value, so one threshold means the same thing for every query, which the
refusal logic needs). `fusion: rrf` orders by reciprocal-rank fusion instead and
keeps the same score for display.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kbqa.config import RetrievalSettings
from kbqa.embeddings import KbqaEmbeddings
from kbqa.embeddings.base import model_dense_range
from kbqa.rerank import Reranker
from kbqa.schema import Chunk, Source
from kbqa.store import ChunkStore
from kbqa.tokenize import Tokenizer


@dataclass(frozen=True, slots=True)
class Candidate:
    int_id: int
    dense: float  # calibrated 0–1
    keyword: float  # 0–1
    score: float
    rrf: float


class HybridRetriever:
    """Search one store. Stateless apart from its injected collaborators."""

    def __init__(
        self,
        store: ChunkStore,
        embeddings: KbqaEmbeddings,
        tokenizer: Tokenizer,
        settings: RetrievalSettings,
        reranker: Reranker | None = None,
    ) -> None:
        self.store = store
        self.embeddings = embeddings
        self.tokenizer = tokenizer
        self.settings = settings
        self.reranker = reranker

    def dense_bounds(self) -> tuple[float, float]:
        """The cosine band mapped onto 0–1: `retrieval.dense_floor/ceiling`, or the model's own."""
        return self.settings.dense_bounds(model_dense_range(self.embeddings))

    @staticmethod
    def _dense_relevance(cosine: float, bounds: tuple[float, float]) -> float:
        lo, hi = bounds
        return min(1.0, max(0.0, (cosine - lo) / (hi - lo)))

    def search(self, query: str, k: int | None = None, min_score: float | None = None) -> list[Source]:
        """Top-k sources for a query, best first, each with a 0–1 score."""
        s = self.settings
        k = k or s.k
        threshold = s.min_score if min_score is None else min_score
        query = query.strip()
        if not query or self.store.count() == 0:
            return []
        n = max(s.fetch_k, k)
        terms = self.tokenizer.query_terms(query)
        qvec = self.embeddings.encode_queries([query])[0] if s.mode != "keyword" else None
        dense_hits = self.store.dense_search(qvec, n) if qvec is not None else []
        df = self.store.catalog.doc_freqs(terms)
        kw_hits = self.store.keyword_search(terms, n, df) if s.mode != "dense" else []
        ids = list(dict.fromkeys([i for i, _ in dense_hits] + [i for i, _ in kw_hits]))
        if not ids:
            return []
        rows = self.store.chunks(ids)
        cosine = dict(dense_hits)
        missing = [i for i in ids if i not in cosine]
        if missing and qvec is not None:
            for i, vec in self.store.vectors_of(missing).items():
                cosine[i] = float(np.dot(vec, qvec))
        idf = self._idf(terms, df)
        dense_rank = {i: r for r, (i, _) in enumerate(dense_hits)}
        kw_rank = {i: r for r, (i, _) in enumerate(kw_hits)}
        bounds = self.dense_bounds()
        wd = s.dense_weight if s.mode != "keyword" else 0.0
        wk = s.keyword_weight if s.mode != "dense" else 0.0
        candidates = []
        for i in ids:
            if i not in rows:
                continue
            dense = self._dense_relevance(cosine.get(i, 0.0), bounds)
            keyword = _coverage(idf, set(rows[i].terms.split()))
            score = (wd * dense + wk * keyword) / ((wd + wk) or 1.0)
            rrf = sum(
                w / (s.rrf_k + 1 + rank[i]) for w, rank in ((wd, dense_rank), (wk, kw_rank)) if i in rank
            )
            candidates.append(Candidate(i, dense, keyword, score, rrf))
        # Ties are broken by id so results never depend on FAISS's internal order.
        if s.fusion == "rrf":
            candidates.sort(key=lambda c: (-c.rrf, -c.score, c.int_id))
        else:
            candidates.sort(key=lambda c: (-c.score, c.int_id))
        places = merge_places(candidates, rows)
        if self.reranker is not None and places:
            self._rerank(self.reranker, query, places[: s.rerank_depth])
            places.sort(key=lambda p: -p.score)  # stable: unreranked ties keep fusion's order
        out: list[Source] = []
        for place in places:
            if place.score < threshold:
                continue
            ch = place.chunks[0]
            out.append(Source(len(out) + 1, ch.file, ch.path, ch.page, ch.heading, place.score,
                              place.text, ch.id))
            if len(out) == k:
                break
        return out

    def _rerank(self, reranker: Reranker, query: str, places: list[Place]) -> None:
        """Blend the reranker's 0–1 score into each place's relevance (None = no evidence: unchanged)."""
        w = self.settings.rerank_weight
        texts = [_rerank_text(p.chunks[0]) for p in places]
        for place, rr in zip(places, reranker.score(query, texts), strict=True):
            if rr is not None:
                place.score = (1 - w) * place.fused + w * rr

    def doc_freqs(self, terms: Sequence[str]) -> dict[str, int]:
        """How many chunks contain each term (terms no chunk contains are absent or 0)."""
        return self.store.catalog.doc_freqs(terms)

    def has_phrase(self, terms: Sequence[str]) -> bool:
        """Whether some chunk holds these terms next to each other, in this order."""
        return self.store.catalog.has_phrase(terms)

    def term_weights(self, terms: Sequence[str]) -> dict[str, float]:
        """Each term's idf in this store (how much finding it in a text says)."""
        return self._idf(terms)

    def _idf(self, terms: Sequence[str], df: dict[str, int] | None = None) -> dict[str, float]:
        total = max(1, self.store.count())
        df = self.store.catalog.doc_freqs(terms) if df is None else df
        # BM25's idf, floored at a small positive weight so very common terms still count a little.
        return {t: max(0.05, math.log(1 + (total - df.get(t, 0) + 0.5) / (df.get(t, 0) + 0.5))) for t in terms}


def _coverage(idf: dict[str, float], chunk_terms: set[str]) -> float:
    total = sum(idf.values())
    if total <= 0:
        return 0.0
    return sum(w for t, w in idf.items() if t in chunk_terms) / total


@dataclass(slots=True)
class Place:
    """One page (or one run of overlapping chunks of a page-less section): one source slot.

    `members` are its candidates best first, `chunks` their chunks in the same order; `fused`
    is the best member's fused score, `score` the relevance shown (fused, or blended by the reranker).
    """

    members: list[Candidate]
    chunks: list[Chunk]
    fused: float
    score: float

    @property
    def best(self) -> Candidate:
        return self.members[0]

    @property
    def text(self) -> str:
        """Computed for the places shown only: the best chunk joined with its overlapping neighbours."""
        return _stitch(self.chunks)


def place_key(ch: Chunk) -> tuple[str, int | str]:
    """Chunks of one page share a place; page-less chunks are grouped by section, then by overlap."""
    return (ch.path, ch.page) if ch.page is not None else (ch.path, "\x00" + ch.heading)


def merge_places(candidates: Sequence[Candidate], rows: dict[int, Any]) -> list[Place]:
    """Group ranked chunks into places, in the order of each place's best chunk.

    A page-less section splits into several places where its candidate chunks do not
    overlap or touch (a long Markdown section is many places, its overlapping neighbours one).
    """
    groups: dict[tuple[str, int | str], list[list[Candidate]]] = {}
    order: list[list[Candidate]] = []
    for c in candidates:
        if c.int_id not in rows:
            continue
        ch = rows[c.int_id].chunk
        runs = groups.setdefault(place_key(ch), [])
        run = runs[0] if ch.page is not None and runs else next(
            (r for r in runs if any(_touch(rows[m.int_id].chunk, ch) for m in r)), None)
        if run is None:
            run = []
            runs.append(run)
            order.append(run)
        run.append(c)
    return [Place(run, [rows[m.int_id].chunk for m in run], run[0].score, run[0].score) for run in order]


def _touch(a: Chunk, b: Chunk) -> bool:
    """Whether two chunks of one section overlap or meet (their spans share or adjoin a character)."""
    return a.heading == b.heading and a.start <= b.start + len(b.text) and b.start <= a.start + len(a.text)


_MAX_STITCH = 3  # chunks joined into one place's text at most: a source stays a passage, not a page dump


def _stitch(chunks: Sequence[Chunk]) -> str:
    """The best chunk's text, extended by the place's other chunks that overlap or adjoin it.

    Chunks overlap by `splitter.chunk_overlap` characters; `start` (offset in the section)
    tells how much of a neighbour is new. Chunks that do not touch the growing span (another
    section of the same page) stay out: their own text is already in the index.
    """
    best = chunks[0]
    lo, text = best.start, best.text
    used = 1
    grew = True
    while grew and used < _MAX_STITCH:
        grew = False
        for ch in chunks[1:]:
            hi = lo + len(text)
            if ch.heading != best.heading or used >= _MAX_STITCH:
                continue
            end = ch.start + len(ch.text)
            if ch.start <= hi < end and ch.start >= lo:  # continues the span
                text += ch.text[hi - ch.start:]
            elif ch.start < lo <= end and end <= hi:  # leads into it
                text = ch.text[: lo - ch.start] + text
                lo = ch.start
            else:
                continue
            used += 1
            grew = True
    return text


def _rerank_text(ch: Chunk) -> str:
    """What the cross-encoder reads: the section heading (when the text does not start with it) and the chunk."""
    head = ch.heading.rsplit(" > ", 1)[-1]
    return ch.text if not head or ch.text.startswith(head) else f"{head}\n{ch.text}"
