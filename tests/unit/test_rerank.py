"""Rerank stage: place merging, the blend into the 0–1 scale, and local cross-encoder folders."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from kbqa.config import Settings
from kbqa.errors import ConfigError
from kbqa.kb import KnowledgeBase
from kbqa.rerank import Calibration, OnnxCrossEncoder, StCrossEncoder, make_reranker
from kbqa.retriever import Candidate, merge_places
from kbqa.schema import Chunk


class _Row:
    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk


def _chunk(i: int, text: str, page: int | None, start: int, heading: str = "H", path: str = "a.pdf") -> Chunk:
    return Chunk(f"c{i}", i, text, Path(path).name, path, page, heading, start)


def _cand(i: int, score: float) -> Candidate:
    return Candidate(i, score, score, score, 0.0)


def test_chunks_of_one_page_share_one_slot_with_the_best_text_first() -> None:
    rows = {1: _Row(_chunk(1, "alpha beta gamma", 3, 0)), 2: _Row(_chunk(2, "gamma delta", 3, 11)),
            3: _Row(_chunk(3, "other page", 4, 0)), 4: _Row(_chunk(4, "far away text", 3, 500, heading="K"))}
    places = merge_places([_cand(2, 0.9), _cand(3, 0.8), _cand(1, 0.7), _cand(4, 0.6)], rows)
    assert [p.best.int_id for p in places] == [2, 3]
    page3 = places[0]
    assert [m.int_id for m in page3.members] == [2, 1, 4] and page3.score == 0.9
    # the overlapping neighbour joins the text once (no doubled "gamma"); the other section stays out
    assert page3.text == "alpha beta gamma delta"


def test_pageless_sections_merge_only_overlapping_chunks() -> None:
    rows = {1: _Row(_chunk(1, "one two three", None, 0, path="a.md")),
            2: _Row(_chunk(2, "three four", None, 8, path="a.md")),
            3: _Row(_chunk(3, "much later", None, 900, path="a.md"))}
    places = merge_places([_cand(1, 0.9), _cand(3, 0.8), _cand(2, 0.7)], rows)
    assert [[m.int_id for m in p.members] for p in places] == [[1, 2], [3]]
    assert places[0].text == "one two three four"


class _Keyed:
    """A deterministic stand-in: scores passages by a keyword, None for the ones marked as foreign."""

    name = "keyed"

    def __init__(self, word: str) -> None:
        self.word = word
        self.seen: list[int] = []

    def score(self, query: str, passages: Sequence[str]) -> list[float | None]:
        self.seen.append(len(passages))
        return [None if "伏特" in p else (1.0 if self.word in p else 0.0) for p in passages]


DOCS = {
    "a.txt": "Pump P-17 must be primed before start-up. Prime the pump with two litres.",
    "b.txt": "The pump P-17 start-up note: press the green button. Valve V3 stays open.",
    "c.txt": "本设备的额定电压为二百二十伏特，最大功率为一千五百瓦。",
}


@pytest.fixture
def kb(settings: Settings, fake_kb: Callable[[dict[str, str]], KnowledgeBase]) -> KnowledgeBase:
    settings.retrieval.reranker = "none"
    return fake_kb(DOCS)


def test_reranker_reorders_and_enters_the_one_score(kb: KnowledgeBase) -> None:
    fused = kb.search("pump P-17 start-up green button", k=3, min_score=0.0)
    assert fused[0].file == "b.txt"
    keyed = _Keyed("litres")
    kb._reranker, kb._reranker_built = keyed, True
    kb.settings.retrieval.rerank_weight = 0.5
    hits = kb.search("pump P-17 start-up green button", k=3, min_score=0.0)
    assert hits[0].file == "a.txt" and [h.n for h in hits] == list(range(1, len(hits) + 1))
    by_file = {h.file: h for h in hits}
    before = {h.file: h.score for h in fused}
    assert by_file["a.txt"].score == pytest.approx(0.5 * before["a.txt"] + 0.5)
    assert by_file["b.txt"].score == pytest.approx(0.5 * before["b.txt"])
    if "c.txt" in by_file:  # no evidence from the model: the fused score stays
        assert by_file["c.txt"].score == pytest.approx(before["c.txt"])


def test_rerank_depth_limits_what_the_model_reads(kb: KnowledgeBase) -> None:
    keyed = _Keyed("litres")
    kb._reranker, kb._reranker_built = keyed, True
    kb.settings.retrieval.rerank_depth = 1
    kb.search("pump P-17", k=3, min_score=0.0)
    assert keyed.seen == [1]


def test_reranker_setting_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        make_reranker(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"neither config\.json nor model\.onnx"):
        make_reranker(str(tmp_path / "empty"))
    assert make_reranker("none") is None


def test_calibration_is_a_logistic() -> None:
    cal = Calibration(2.0, 3.0)
    assert cal(2.0) == pytest.approx(0.5)
    assert cal(5.0) == pytest.approx(1 / (1 + math.exp(-1)))
    assert 0.0 < cal(-1e9) < 1e-20 and cal(1e9) == pytest.approx(1.0)


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "pump", "prime", "water", "the", "with", "fan",
         "how", "do", "i", "blade", "clean", "litres", "two", "?", "."]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real BERT cross-encoder at tiny size (random weights), saved as transformers saves one."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-ce")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=1)
    model = BertForSequenceClassification(cfg).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _torch_logits(folder: Path, query: str, passages: list[str]) -> list[float]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        batch = tok([query] * len(passages), passages, padding=True, return_tensors="pt")
        return [float(x) for x in model(**batch).logits[:, 0]]


QUERY = "how do i prime the pump ?"
PASSAGES = ["prime the pump with two litres of water .", "clean the fan blade .", "the pump ."]


def test_local_sentence_transformers_folder(tiny_cross_encoder: Path) -> None:
    rr = make_reranker(str(tiny_cross_encoder))
    assert isinstance(rr, StCrossEncoder)
    got = rr.score(QUERY, PASSAGES)
    want = [1 / (1 + math.exp(-x)) for x in _torch_logits(tiny_cross_encoder, QUERY, PASSAGES)]
    assert got == pytest.approx(want, abs=1e-5)
    # a folder model reads every language (only the bundled English one passes Chinese through)
    assert all(s is not None for s in rr.score("泵怎么灌水", ["泵", "fan"]))


def test_local_onnx_folder_matches_the_torch_model(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification

    folder = tmp_path / "onnx-ce"
    shutil.copytree(tiny_cross_encoder, folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    dummy = {k: torch.ones(1, 4, dtype=torch.long) for k in ("input_ids", "attention_mask", "token_type_ids")}
    axes = {k: {0: "batch", 1: "seq"} for k in dummy}
    torch.onnx.export(model, (dummy["input_ids"], dummy["attention_mask"], dummy["token_type_ids"]),
                      str(folder / "model.onnx"), input_names=list(dummy), output_names=["logits"],
                      dynamic_axes={**axes, "logits": {0: "batch"}}, dynamo=False)
    rr = make_reranker(str(folder))
    assert isinstance(rr, OnnxCrossEncoder)
    got = rr.score(QUERY, PASSAGES)
    want = [1 / (1 + math.exp(-x)) for x in _torch_logits(tiny_cross_encoder, QUERY, PASSAGES)]
    assert got == pytest.approx(want, abs=1e-4)
