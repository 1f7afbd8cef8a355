"""Keyword tokens for the FTS5 index and for query-term coverage.

jieba segments Chinese (search mode, so 中华人民共和国 also yields 中华/人民/共和国);
Latin words are lower-cased and lightly stemmed (Harman's S-stemmer: plural
endings only), because FTS5's porter tokenizer would stem the index but we also need
the same terms in Python for coverage and idf.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from kbqa.jieba_query import QueryJieba

log = logging.getLogger(__name__)

TERMS_VERSION = 2
"""Bumped whenever `Tokenizer.terms` changes output, so indexes re-derive their keyword terms."""
SHORT_CJK_CHARS = 256
"""A text with at most this many CJK characters is cut by `QueryJieba` (same words, no 0.5 s dictionary
load) until something longer has made the tokenizer load jieba's whole dictionary."""

_CJK_RUN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
_LATIN_TOKEN = re.compile(r"[0-9a-z\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff]+")
_ASCII_WORD = re.compile(r"^[a-z]+$")

STOPWORDS: frozenset[str] = frozenset(
    """a an the and or but if of to in on at by for with from as is are was were be been being
    it its this that these those do does did how what which who whom why when where can could
    should would will shall may might must i you he she we they me my your our their not no
    there here about into than then so such via per vs using use used
    的 了 和 是 在 有 就 也 都 而 及 与 或 一个 什么 怎么 如何 哪些 哪个 为什么 吗 呢 吧 啊
    请 我 你 他 她 它 我们 你们 他们 这 那 这个 那个 之 其 中 对 把 被 让 给 从 到 以 为""".split()
)


@functools.lru_cache(maxsize=1 << 16)  # words repeat: caching beats recomputing in Python
def _stem(word: str) -> str:
    if not _ASCII_WORD.match(word) or len(word) <= 3:
        return word
    if word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if word.endswith("s") and not word.endswith(("us", "ss")):
        return word[:-1]
    return word


class Tokenizer:
    """Turns text into normalised keyword terms. jieba loads lazily, once per instance."""

    def __init__(self) -> None:
        self._jieba: Any = None
        self._short: QueryJieba | Literal[False] | None = None  # False: unavailable
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Load jieba's whole dictionary now (~0.5 s), e.g. in a server before its first question."""
        self._cut()

    def _short_cutter(self, runs: list[str]) -> Any:
        """A jieba tokenizer for these few short runs: `QueryJieba`'s, or the full one if that fails."""
        if self._short is None:
            with self._lock:
                if self._short is None:
                    from kbqa.errors import KbqaError
                    from kbqa.jieba_query import QueryJieba

                    try:
                        self._short = QueryJieba()
                    except KbqaError as exc:
                        log.warning("short-text jieba unavailable (%s); loading the whole dictionary", exc)
                        self._short = False
        if self._short is False or self._jieba is not None:
            return self._cut()
        return self._short.tokenizer_for(runs)

    def _cut(self) -> Any:
        if self._jieba is None:
            with self._lock:
                if self._jieba is None:
                    import jieba

                    jieba.setLogLevel(logging.WARNING)
                    tok = jieba.Tokenizer()
                    tok.initialize()
                    self._jieba = tok
        return self._jieba

    def terms(self, text: str) -> list[str]:
        """All terms of a text in order (duplicates kept), for indexing.

        Only CJK runs go through jieba; everything else is split by a regex, which is
        ~20x faster and gives the same words (jieba has no dictionary for Latin text).
        """
        out: list[str] = []
        text = text.lower()
        pos = 0
        runs = list(_CJK_RUN.finditer(text))
        cutter: Any = None
        if runs and self._jieba is None and sum(r.end() - r.start() for r in runs) <= SHORT_CJK_CHARS:
            cutter = self._short_cutter([r.group() for r in runs])
        for run in runs:
            out.extend(_stem(w) for w in _LATIN_TOKEN.findall(text, pos, run.start()))
            out.extend(w for w in (cutter or self._cut()).cut_for_search(run.group()) if w.strip())
            pos = run.end()
        out.extend(_stem(w) for w in _LATIN_TOKEN.findall(text, pos))
        return out

    def query_terms(self, text: str) -> list[str]:
        """Distinct content terms of a query, stopwords removed (kept if nothing else is left)."""
        terms = list(dict.fromkeys(self.terms(text)))
        content = [t for t in terms if t not in STOPWORDS]
        return content or terms
