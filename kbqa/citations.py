"""Sentences and `[n]` markers: splitting an answer, placing and reading citations, and checking
that each cited sentence is backed by the source it cites.

Kept apart from the answer chain (`kbqa/qa.py`) so the context focus (`kbqa/context.py`) and
the chain share one sentence splitter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from kbqa.prompts import detect_language
from kbqa.schema import Source
from kbqa.tokenize import STOPWORDS, Tokenizer

# Sentence ends: CJK punctuation, or . ; : ! ? followed by a capital/digit; and line breaks.
SENTENCE_END = re.compile(r"(?<=[。！？；!?])|(?<=[.;:])\s+(?=[A-Z0-9\\(\"'“])|\n+")


def sentences(text: str) -> list[str]:
    parts = (p.strip() for p in SENTENCE_END.split(text))
    return [p if len(p) <= 300 else p[:300].rstrip() + "…" for p in parts if len(p) >= 4]


def is_cjk_text(text: str) -> bool:
    return detect_language(text) == "zh"


def cite(sentence: str, n: int) -> str:
    """`sentence [n].` — the marker goes before the closing punctuation, no space in Chinese."""
    m = re.search(r"[.。!！;；]+$", sentence)
    body, end = (sentence[: m.start()], m.group()) if m else (sentence, "")
    space = "" if is_cjk_text(body[-12:]) else " "
    return f"{body.rstrip()}{space}[{n}]{end}"


def strip_markers(text: str) -> str:
    return re.sub(r"\s*\[\d+\]", "", text).strip()


def cited(text: str) -> list[int]:
    return sorted({int(n) for n in re.findall(r"\[(\d+)\]", text)})


_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


@dataclass(frozen=True, slots=True)
class SupportCheck:
    text: str
    dropped: int
    """Sentences no source supports (removed)."""
    recited: int
    """Sentences whose marker pointed at a source that does not hold them, cited by the one that does."""


def support_check(text: str, sources: Sequence[Source], tokenizer: Tokenizer) -> SupportCheck:
    """Keep the model's own sentences where a source backs them; fix or drop the rest.

    A sentence is backed by a source when ≥ 60 % of its content terms occur in it (50 % for the
    source it cites itself) and every number it states occurs there too — the failure this
    guards against is a sourced-looking wrong figure ("50 ml" where the manual says 500 ml).
    A cited sentence backed only by another source is re-cited by that one. Sentences with no
    content terms ("Yes.") are kept as they are.
    """
    src_terms = {s.n: set(tokenizer.terms(s.text)) for s in sources}
    src_numbers = {s.n: set(_NUMBER.findall(s.text.replace(",", ""))) for s in sources}
    out: list[str] = []
    dropped = recited = 0
    for sent in sentences(text):
        own = [n for n in cited(sent) if n in src_terms]
        body = strip_markers(sent)
        terms = {t for t in tokenizer.terms(body) if t not in STOPWORDS}
        if not terms:
            out.append(sent)
            continue
        numbers = set(_NUMBER.findall(body.replace(",", "")))

        def backs(n: int, need: float, numbers: set[str] = numbers, terms: set[str] = terms) -> bool:
            return numbers <= src_numbers[n] and len(terms & src_terms[n]) / len(terms) >= need

        if own and any(backs(n, 0.5) for n in own):
            out.append(sent)
            continue
        best = [n for n in src_terms if backs(n, 0.6)]
        if best:
            n = max(best, key=lambda n: (len(terms & src_terms[n]), -n))
            out.append(cite(body, n))
            recited += bool(own)
        else:
            dropped += 1
    joiner = "" if is_cjk_text(text) else " "
    return SupportCheck(joiner.join(out), dropped, recited)
