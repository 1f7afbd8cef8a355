"""Two dense models in one vector: a multilingual model for every text, an English one for Latin script.

`embedding.model: use-multilingual+minilm`. USE-multilingual is the only bundled model that
retrieves Chinese; MiniLM ranks English far better (dev set: +0.09 MRR) but maps Chinese to
[UNK]. Instead of a second vector index (a second store, a second crash-recovery path, a
second Milvus collection), each vector is the concatenation of both models' unit vectors,
weighted so that one inner product is the fusion wanted:

    document, Latin script   [a·U, b·M]        question, Latin script   [a·Uq, b·Mq]
    document, Chinese        [a·U, 0]          question, Chinese        [Uq / a, 0]

with a = b = 1/√2. A Latin question against a Latin document scores (cos_U + cos_M) / 2, a
Chinese question scores cos_U against every document (MiniLM never sees it), and the
English model's time goes only to Latin-script chunks. The one case that loses is an
English question against a Chinese document (cos_U / 2): cross-lingual matches count half.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from kbqa.embeddings.base import KbqaEmbeddings, as_text_list
from kbqa.lang import cjk_share

LATIN_MAX_CJK = 0.2  # a text with a smaller share of CJK letters is embedded by the English model too
_A = 1 / math.sqrt(2)


class DualEmbeddings(KbqaEmbeddings):
    """`multilingual` for every text, `english` for Latin-script texts, in one concatenated vector."""

    def __init__(self, multilingual: KbqaEmbeddings, english: KbqaEmbeddings) -> None:
        self.multilingual = multilingual
        self.english = english
        self.model_id = f"dual[{multilingual.model_id}+{english.model_id}]"
        self.batch_size = multilingual.batch_size
        lo = min(multilingual.dense_range[0], english.dense_range[0])
        hi = max(multilingual.dense_range[1], english.dense_range[1])
        self.dense_range = (lo, hi)

    @property
    def dimension(self) -> int:
        return self.multilingual.dimension + self.english.dimension

    def warm_up(self) -> None:
        self.multilingual.warm_up()
        self.english.warm_up()

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:  # pragma: no cover - encode is overridden
        return self.encode(texts, batch_size)

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        items = as_text_list(texts)
        return self._join(items, self.multilingual.encode(items, batch_size), query=False, batch_size=batch_size)

    def encode_queries(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        items = as_text_list(texts)
        return self._join(items, self.multilingual.encode_queries(items, batch_size), query=True,
                          batch_size=batch_size)

    def _join(self, items: list[str], multi: np.ndarray, *, query: bool, batch_size: int | None) -> np.ndarray:
        out = np.zeros((len(items), self.dimension), dtype=np.float32)
        latin = [i for i, t in enumerate(items) if cjk_share(t) < LATIN_MAX_CJK]
        d = self.multilingual.dimension
        out[:, :d] = multi * _A
        if query:  # a Chinese question reads the multilingual half alone, at full weight
            cjk = np.ones(len(items), dtype=bool)
            cjk[latin] = False
            out[cjk, :d] = multi[cjk] / _A
        if latin:
            texts = [items[i] for i in latin]
            eng = self.english.encode_queries(texts, batch_size) if query else self.english.encode(texts, batch_size)
            out[latin, d:] = eng * _A
        return np.ascontiguousarray(out)
