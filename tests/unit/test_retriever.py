from __future__ import annotations

from collections.abc import Callable

import pytest

from kbqa.kb import KnowledgeBase

DOCS = {
    "pumps.txt": "Pump P-17 must be primed before start-up. Open valve V3, then press the green button.",
    "fans.txt": "Fan blades are cleaned monthly with a dry cloth. Never use water on the motor.",
    "电源.txt": "本设备的额定电压为二百二十伏特，最大功率为一千五百瓦。请勿在潮湿环境中使用。",
    "保修.txt": "保修期为两年，自购买之日起计算。人为损坏不在保修范围内。",
}


@pytest.fixture
def kb(fake_kb: Callable[[dict[str, str]], KnowledgeBase]) -> KnowledgeBase:
    return fake_kb(DOCS)


def test_scores_are_0_to_1_and_sorted(kb: KnowledgeBase) -> None:
    hits = kb.search("how do I prime pump P-17", k=4)
    assert hits[0].file == "pumps.txt"
    assert [h.n for h in hits] == list(range(1, len(hits) + 1))
    scores = [h.score for h in hits]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)


def test_chinese_query_finds_chinese_file_via_jieba_keywords(kb: KnowledgeBase) -> None:
    assert kb.search("保修期是多久？", k=1)[0].file == "保修.txt"
    assert kb.search("额定电压是多少", k=1)[0].file == "电源.txt"


def test_keyword_mode_and_min_score(kb: KnowledgeBase) -> None:
    kb.settings.retrieval.mode = "keyword"
    hits = kb.retriever().search("P-17 valve")
    assert hits and hits[0].file == "pumps.txt"
    assert kb.search("zzzz qqqq unrelated", min_score=0.5) == []
    assert kb.search("   ") == []


def test_rrf_fusion_orders_by_rank(kb: KnowledgeBase) -> None:
    kb.settings.retrieval.fusion = "rrf"
    assert kb.search("clean the fan blades", k=1)[0].file == "fans.txt"


def test_source_json_shape_is_stable(kb: KnowledgeBase) -> None:
    src = kb.search("fan blades", k=1)[0].to_json()
    assert list(src) == ["n", "file", "path", "page", "heading", "score", "text"]
    assert src["path"] == "knowledge/r/fans.txt"
