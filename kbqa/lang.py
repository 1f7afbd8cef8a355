"""Which script a text is written in: the one place kbqa decides "Chinese or not".

Kept free of heavy imports so that retrieval (and a cold `kbqa search`) can use it
without loading the LLM stack.
"""

from __future__ import annotations

import re

CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]+")


def detect_language(text: str) -> str:
    """'zh' if the text is mostly Chinese characters (counted against Latin words), else 'en'."""
    cjk = len(CJK_CHAR.findall(text))
    latin = len(_LATIN.findall(text))
    return "zh" if cjk and cjk >= latin else "en"


def cjk_share(text: str) -> float:
    """Share of a text's letters (CJK characters and Latin letters) that are CJK characters."""
    cjk = len(CJK_CHAR.findall(text))
    latin = sum(len(w) for w in _LATIN.findall(text))
    return cjk / (cjk + latin) if cjk + latin else 0.0
