"""Sentences and `[n]` markers: splitting an answer, placing and reading citations, and checking
that each cited sentence is backed by the source it cites.

Kept apart from the answer chain (`kbqa/qa.py`) so the context focus (`kbqa/context.py`) and
the chain share one sentence splitter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from kbqa.prompts import CJK_CHAR, detect_language
from kbqa.schema import Source
from kbqa.tokenize import STOPWORDS, Tokenizer

# Sentence ends: CJK punctuation; ! ? before a space (not red!75); . ; : before a capital/digit; line breaks.
SENTENCE_END = re.compile(r"(?<=[。！？；])|(?<=[!?])(?=\s|$)|(?<=[.;:])\s+(?=[A-Z0-9\\(\"'“])|\n+")


# Code a model writes: a fenced block (kept with the sentence that introduces it) or an inline
# `span`; neither is split at the punctuation inside it (`\color{red!75}`, `a.b`).
_CODE = re.compile(r"\s*```.*?(?:```|$)|`[^`\n]+`", re.S)


def sentences(text: str) -> list[str]:
    """Sentences of ≥ 4 characters (≥ 2 in Chinese: 两年。), cut at 300 (code blocks kept whole)."""
    code: list[str] = []

    def hide(m: re.Match[str]) -> str:
        code.append(m.group())
        return f"\x00{len(code) - 1}\x00"

    parts = (p.strip() for p in SENTENCE_END.split(_CODE.sub(hide, text)))
    out: list[str] = []
    for p in parts:
        if len(p) < 4 and not (len(p) >= 2 and CJK_CHAR.search(p)):
            continue
        if len(p) > 300 and "```" not in p:
            p = p[:300].rstrip() + "…"
        out.append(re.sub(r"\x00(\d+)\x00", lambda m: code[int(m.group(1))], p).strip())
    return out


def is_cjk_text(text: str) -> bool:
    return detect_language(text) == "zh"


def cite(sentence: str, n: int) -> str:
    """`sentence [n].` — the marker goes before the closing punctuation, no space in Chinese;
    before a code block the sentence brings (`For example [1]:` + the block), never after its fence."""
    fence = sentence.find("```")
    if fence > 0:
        head, block = sentence[:fence].rstrip(), sentence[fence:]
        m = re.search(r"[:：]$", head)
        body, end = (head[: m.start()], m.group()) if m else (head, "")
        return f"{cite(body, n)}{end}\n{block}"
    m = re.search(r"[.。!！;；]+$", sentence)
    body, end = (sentence[: m.start()], m.group()) if m else (sentence, "")
    space = "" if is_cjk_text(body[-12:]) else " "
    return f"{body.rstrip()}{space}[{n}]{end}"


def strip_markers(text: str) -> str:
    return re.sub(r"\s*\[\d+\]", "", text).strip()


def cited(text: str) -> list[int]:
    return sorted({int(n) for n in re.findall(r"\[(\d+)\]", text)})


_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_CJK_NUMERAL = re.compile(r"[零〇一二两三四五六七八九十百千万]+")
_CJK_DIGIT = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
              "八": 8, "九": 9}
_CJK_UNIT = {"十": 10, "百": 100, "千": 1000}


def cjk_numeral_value(run: str) -> int | None:
    """五百 → 500, 二十五 → 25, 一千四百五十 → 1450, 十五 → 15; None for what is not a numeral.

    Hand-written because the check only needs the plain positional form Chinese manuals write
    quantities in; the converters on PyPI also rewrite words that merely contain 一 or 万.
    """
    total = section = digit = 0
    seen = False
    for ch in run:
        if ch in _CJK_DIGIT:
            digit, seen = _CJK_DIGIT[ch], True
        elif ch in _CJK_UNIT:
            section += (digit or 1) * _CJK_UNIT[ch]
            digit, seen = 0, True
        elif ch == "万":
            total += (section + digit) * 10000
            section = digit = 0
        else:
            return None
    return total + section + digit if seen else None


def numbers_in(text: str, *, cjk: bool = False) -> set[str]:
    """The numbers a text states, as digits; with `cjk`, Chinese numerals too (五百毫升 → 500)."""
    found = set(_NUMBER.findall(text.replace(",", "")))
    if cjk:
        for run in _CJK_NUMERAL.findall(text):
            value = cjk_numeral_value(run)
            if value is not None:
                found.add(str(value))
    return found


@dataclass(frozen=True, slots=True)
class SupportCheck:
    text: str
    dropped: int
    """Sentences no source supports (removed)."""
    recited: int
    """Sentences whose marker pointed at a source that does not hold them, cited by the one that does."""


class _Backing:
    """Which sources back a sentence: its content terms (numbers aside) mostly occur in the source,
    and every number it states occurs there too, written in digits or in Chinese numerals.

    Only the source side reads Chinese numerals: in an answer, 一 or 万 inside ordinary words would
    count as numbers the source never states.
    """

    def __init__(self, sources: Sequence[Source], tokenizer: Tokenizer, question: str = "") -> None:
        self.tokenizer = tokenizer
        self.terms = {s.n: set(tokenizer.terms(s.text)) for s in sources}
        self.numbers = {s.n: numbers_in(s.text, cjk=True) for s in sources}
        self.given_terms = set(tokenizer.terms(question))
        self.given_numbers = numbers_in(question, cjk=True)

    def content(self, sentence: str) -> tuple[set[str], set[str]]:
        """What the sentence adds to the question: its content terms and numbers that the question
        does not already hold ("50 rows" in the question is not a figure the answer invents)."""
        body = strip_markers(sentence)
        numbers = numbers_in(body)
        terms = {t for t in self.tokenizer.terms(body) if t not in STOPWORDS and t not in numbers}
        return terms - self.given_terms, numbers - self.given_numbers

    def share(self, n: int, terms: set[str], numbers: set[str]) -> float:
        """Share of the terms source `n` holds; 0 when it lacks one of the numbers."""
        if not numbers <= self.numbers[n]:
            return 0.0
        return len(terms & self.terms[n]) / len(terms) if terms else 1.0

    def best(self, terms: set[str], numbers: set[str], need: float) -> int | None:
        """The backing source sharing most terms (lowest number on a tie), or None."""
        scored = [(self.share(n, terms, numbers), len(terms & self.terms[n]), -n) for n in self.terms]
        ok = [x for x in scored if x[0] >= need]
        return -max(ok, key=lambda x: (x[1], x[2]))[2] if ok else None


def support_check(text: str, sources: Sequence[Source], tokenizer: Tokenizer, question: str = "") -> SupportCheck:
    """Keep the model's own sentences where a source backs them; fix or drop the rest.

    A sentence is backed by a source when ≥ 60 % of its content terms occur in it (50 % for the
    source it cites itself) and every number it states occurs there too — the failure this
    guards against is a sourced-looking wrong figure ("50 ml" where the manual says 500 ml).
    A cited sentence backed only by another source is re-cited by that one. Terms and numbers
    the question holds count as given. Sentences with nothing beyond them ("Yes.", "Both can be
    highlighted in one listing.") are kept as they are.
    """
    backing = _Backing(sources, tokenizer, question)
    out: list[str] = []
    dropped = recited = 0
    for sent in sentences(text):
        own = [n for n in cited(sent) if n in backing.terms]
        terms, numbers = backing.content(sent)
        if not terms and not numbers:
            out.append(sent)
            continue
        if own and any(backing.share(n, terms, numbers) >= 0.5 for n in own):
            out.append(sent)
            continue
        n = backing.best(terms, numbers, 0.6)
        if n is not None:
            out.append(cite(strip_markers(sent), n))
            recited += bool(own)
        else:
            dropped += 1
    joiner = "" if is_cjk_text(text) else " "
    return SupportCheck(joiner.join(out), dropped, recited)


def attribute(text: str, sources: Sequence[Source], tokenizer: Tokenizer, question: str = "") -> str:
    """Cite each sentence of an answer that cites nothing by the source backing it (≥ 60 %).

    Used when the model gave no markers: small models often answer correctly but forget them,
    and Qwen in Chinese often answers in one bare sentence. Sentences no source backs (made
    up), questions the model echoes and sentences without content are dropped; the caller
    replaces an answer left with nothing cited by the extractive one. Sentences that only restate
    the question are dropped too.
    """
    backing = _Backing(sources, tokenizer, question)
    out: list[str] = []
    for sent in sentences(text):
        if sent.rstrip().endswith(("?", "？")):
            continue
        terms, numbers = backing.content(sent)
        if not terms:
            continue
        n = backing.best(terms, numbers, 0.6)
        if n is not None:
            out.append(cite(sent, n))
    joiner = "" if is_cjk_text(text) else " "
    return joiner.join(out)
