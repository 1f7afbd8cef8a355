"""What of each source the model reads: the sentences that bear on the question, cut to a token budget.

On a CPU the prompt is the wait (a 1.5B model reads roughly 10-40 prompt tokens/s on two
cores), so the prompt carries only the parts of each source that matter: every sentence is
scored by the idf-weighted share of the question's terms it holds, the best ones are kept
with their neighbours (a fact's sentence often leans on the one before or after), in
document order, with " … " where text was left out, until the source's share of the budget
(counted with the model's own tokenizer) is spent. A source short enough to fit is kept
whole. The sources the user sees keep their full text; only the prompt is cut.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from kbqa.citations import SENTENCE_END
from kbqa.schema import Source
from kbqa.tokenize import STOPWORDS, Tokenizer

GAP = " … "


def split_sentences(text: str) -> list[str]:
    """The text's sentences (and lines), stripped, empty ones dropped (unlike `citations.sentences`,
    short and long ones are kept whole: this is source text, not an answer)."""
    return [p.strip() for p in SENTENCE_END.split(text) if p and p.strip()]


def focus_sources(
    question: str,
    sources: Sequence[Source],
    *,
    budget: int,
    count_tokens: Callable[[str], int],
    tokenizer: Tokenizer,
    weights: Mapping[str, float],
    neighbours: int = 1,
) -> list[Source]:
    """`sources` with each text cut to what bears on `question`, all together within `budget` tokens.

    The budget is shared evenly; what a short source leaves unused goes to the ones after it.
    A source whose focused text would be empty keeps its first sentence.
    """
    if not sources:
        return []
    q_terms = {t for t in tokenizer.query_terms(question) if t not in STOPWORDS}
    out: list[Source] = []
    left = budget
    for i, source in enumerate(sources):
        share = max(32, left // (len(sources) - i))
        text = _focus_text(source.text, q_terms, share, count_tokens, tokenizer, weights, neighbours)
        left -= count_tokens(text)
        out.append(replace(source, text=text))
    return out


def _focus_text(text: str, q_terms: set[str], budget: int, count_tokens: Callable[[str], int],
                tokenizer: Tokenizer, weights: Mapping[str, float], neighbours: int) -> str:
    if count_tokens(text) <= budget:
        return text.strip()
    sentences = split_sentences(text)
    if not sentences:
        return ""
    total = sum(weights.get(t, 1.0) for t in q_terms) or 1.0
    scores = [sum(weights.get(t, 1.0) for t in q_terms & set(tokenizer.terms(s))) / total for s in sentences]
    costs = [count_tokens(s) + 1 for s in sentences]
    order = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))
    chosen: set[int] = set()
    spent = 0
    for i in order:
        if scores[i] <= 0 and chosen:
            break
        # the sentence itself first, then its neighbours, each only while the budget lasts
        for j in [i, *[i + d for d in range(-neighbours, neighbours + 1) if d]]:
            if 0 <= j < len(sentences) and j not in chosen and spent + costs[j] <= budget:
                chosen.add(j)
                spent += costs[j]
        if spent >= budget:
            break
    if not chosen:  # even the best sentence is longer than the share: keep its head
        return _head(sentences[order[0]], budget, count_tokens)
    parts: list[str] = []
    previous = -2
    for j in sorted(chosen):
        if parts and j != previous + 1:
            parts.append(GAP.strip())
        parts.append(sentences[j])
        previous = j
    return _join(parts)


def _join(parts: list[str]) -> str:
    out = ""
    for p in parts:
        if not out:
            out = p
        elif _cjk(out[-1]) and _cjk(p[0]):
            out += p
        else:
            out += " " + p
    return out


def _cjk(ch: str) -> bool:
    return "\u3000" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef"


def _head(sentence: str, budget: int, count_tokens: Callable[[str], int]) -> str:
    lo, hi = 0, len(sentence)
    while lo < hi:  # binary search on characters for the longest head within the budget
        mid = (lo + hi + 1) // 2
        if count_tokens(sentence[:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return sentence[:lo].rstrip() + "…"
