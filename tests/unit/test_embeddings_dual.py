"""use-multilingual+minilm: one inner product over the concatenated vector is the per-script fusion."""

from __future__ import annotations

import numpy as np
import pytest

from kbqa.embeddings.composite import DualEmbeddings
from kbqa.testing import FakeEmbeddings


class _Counting(FakeEmbeddings):
    def __init__(self, dimension: int) -> None:
        super().__init__(dimension)
        self.seen: list[str] = []

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        self.seen.extend(texts)
        return super()._encode(texts, batch_size)


@pytest.fixture
def dual() -> DualEmbeddings:
    return DualEmbeddings(FakeEmbeddings(32), _Counting(16))


EN_DOC = "Prime the pump with two litres of water before the first start."
ZH_DOC = "首次启动前，请向泵内注入两升水。"
EN_Q = "How much water primes the pump?"
ZH_Q = "泵需要注入多少水？"


def test_latin_question_scores_the_mean_of_both_cosines(dual: DualEmbeddings) -> None:
    u, m = dual.multilingual, dual.english
    d, q = dual.encode([EN_DOC])[0], dual.encode_queries([EN_Q])[0]
    want = (float(u.encode([EN_DOC])[0] @ u.encode_queries([EN_Q])[0])
            + float(m.encode([EN_DOC])[0] @ m.encode_queries([EN_Q])[0])) / 2
    assert dual.dimension == 48 and d.shape == (48,)
    assert float(d @ q) == pytest.approx(want, abs=1e-6)


def test_chinese_question_reads_the_multilingual_model_alone(dual: DualEmbeddings) -> None:
    u = dual.multilingual
    q = dual.encode_queries([ZH_Q])[0]
    assert not q[32:].any()
    for doc in (EN_DOC, ZH_DOC):
        want = float(u.encode([doc])[0] @ u.encode_queries([ZH_Q])[0])
        assert float(dual.encode([doc])[0] @ q) == pytest.approx(want, abs=1e-6)


def test_the_english_model_never_sees_chinese_text(dual: DualEmbeddings) -> None:
    english = dual.english
    assert isinstance(english, _Counting)
    vecs = dual.encode([ZH_DOC, EN_DOC])
    assert english.seen == [EN_DOC]
    assert not vecs[0, 32:].any() and vecs[1, 32:].any()
    assert dual.model_id == "dual[fake-hash-32+fake-hash-16]"
