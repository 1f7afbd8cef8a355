"""Embedding contract, fakes and factory — fast: no model weights are loaded here."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings

from kbqa.config import EmbeddingSettings
from kbqa.embeddings import (
    KbqaEmbeddings,
    SentenceTransformerEmbeddings,
    UseMultilingualEmbeddings,
    bundled_minilm_path,
    check_device,
    make_embeddings,
    physical_cores,
)
from kbqa.embeddings.onnx_runtime import FORMAT_VERSION, cache_folder, cached_variant, pool
from kbqa.embeddings.st_config import read_st_dir
from kbqa.embeddings.use_tokenizer import read_sentencepiece
from kbqa.errors import EmbeddingError
from kbqa.testing import FakeEmbeddings


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


# --------------------------------------------------------------------------- FakeEmbeddings


def test_fake_is_deterministic_normalised_float32() -> None:
    texts = ["The pump needs grease every 200 hours.", "泵每运行两百小时需要加注润滑脂。", ""]
    a = FakeEmbeddings().encode(texts)
    b = FakeEmbeddings().encode(texts)
    assert a.dtype == np.float32 and a.shape == (3, 64) and a.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)


def test_fake_shared_words_and_cjk_bigrams_are_similar() -> None:
    emb = FakeEmbeddings()
    q, near, far = emb.encode(["grease schedule for the pump", "the pump grease schedule", "valve torque table"])
    assert cos(q, near) > 0.6 > cos(q, far)
    q, near, far = emb.encode(["润滑脂加注周期", "设备的润滑脂加注周期为两百小时", "阀门扭矩表"])
    assert cos(q, near) > cos(q, far) + 0.3


def test_fake_dimension_and_model_id() -> None:
    emb = FakeEmbeddings(dimension=32)
    assert emb.dimension == 32 and emb.model_id == "fake-hash-32" and emb.normalized
    assert FakeEmbeddings().model_id == "fake-hash-64"
    with pytest.raises(ValueError, match="dimension"):
        FakeEmbeddings(dimension=1)


def test_empty_and_punctuation_only_texts_get_a_unit_vector() -> None:
    v = FakeEmbeddings().encode(["", "   ", "!!!"])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------- the base contract


def test_langchain_interface_shapes() -> None:
    emb = FakeEmbeddings()
    assert isinstance(emb, Embeddings) and isinstance(emb, KbqaEmbeddings)
    docs = emb.embed_documents(["a b", "c d", "e"])
    assert len(docs) == 3 and all(len(row) == 64 and isinstance(row[0], float) for row in docs)
    query = emb.embed_query("a b")
    assert len(query) == 64 and query == pytest.approx(docs[0], abs=1e-6)
    assert asyncio.run(emb.aembed_query("a b")) == pytest.approx(query)
    assert len(asyncio.run(emb.aembed_documents(["x", "y"]))) == 2


def test_encode_edge_cases() -> None:
    emb = FakeEmbeddings()
    assert emb.encode([]).shape == (0, 64)
    with pytest.raises(TypeError, match="single string"):
        emb.encode("not a list")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        emb.encode(["ok", None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="batch_size"):
        emb.encode(["x"], batch_size=0)


class _Raw(KbqaEmbeddings):
    """Returns unnormalised (or wrongly shaped) rows, to test what the base class guarantees."""

    model_id = "raw"

    def __init__(self, shape_bug: bool = False) -> None:
        self.shape_bug = shape_bug
        self.batches: list[int] = []

    @property
    def dimension(self) -> int:
        return 3

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        self.batches.append(batch_size)
        rows = len(texts) + (1 if self.shape_bug else 0)
        return np.arange(1, rows * 3 + 1, dtype=np.float64).reshape(rows, 3)


def test_base_normalises_and_checks_shape() -> None:
    v = _Raw().encode(["a", "b"], batch_size=7)
    assert v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(EmbeddingError, match="shape"):
        _Raw(shape_bug=True).encode(["a"])


def test_encode_queries_uses_the_query_prompt() -> None:
    emb = FakeEmbeddings()
    emb.query_prompt = "为这个句子生成表示以用于检索相关文章："
    plain = emb.encode(["润滑周期"])[0]
    prompted = emb.encode_queries(["润滑周期"])[0]
    assert not np.allclose(plain, prompted)
    np.testing.assert_allclose(emb.embed_query("润滑周期"), prompted, rtol=1e-6)
    np.testing.assert_allclose(emb.encode([emb.query_prompt + "润滑周期"])[0], prompted, rtol=1e-6)


# --------------------------------------------------------------------------- factory


def test_factory_builds_use_lazily() -> None:
    emb = make_embeddings(EmbeddingSettings())
    assert isinstance(emb, UseMultilingualEmbeddings)
    assert emb.model_id == "use-multilingual-v3" and emb.dimension == 512 and emb.normalized
    assert not emb.loaded


def test_factory_builds_minilm_lazily_and_knows_its_dimension(tmp_path: Path) -> None:
    emb = make_embeddings(EmbeddingSettings(model="minilm", quantize=False, batch_size=8), cache_dir=tmp_path)
    assert isinstance(emb, SentenceTransformerEmbeddings)
    assert emb.dimension == 384 and emb.model_id == "st:all-MiniLM-L6-v2" and emb.batch_size == 8
    assert not emb.loaded


def test_factory_fake() -> None:
    assert isinstance(make_embeddings(EmbeddingSettings(model="fake")), FakeEmbeddings)


def test_missing_model_dir_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(EmbeddingError, match="no-such-model"):
        make_embeddings(EmbeddingSettings(model=str(missing)))


def test_dir_that_is_not_a_model_is_an_error_naming_it(tmp_path: Path) -> None:
    bogus = tmp_path / "just-files"
    bogus.mkdir()
    (bogus / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(EmbeddingError, match="just-files"):
        make_embeddings(EmbeddingSettings(model=str(bogus)))


def test_corrupt_model_config_is_an_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "modules.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(EmbeddingError, match="broken"):
        make_embeddings(EmbeddingSettings(model=str(bad)))


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu", ""])
def test_bad_device_spelling_is_rejected(device: str) -> None:
    with pytest.raises(EmbeddingError, match=r"embedding\.device"):
        make_embeddings(EmbeddingSettings(device=device))


def test_device_spellings() -> None:
    assert check_device(" CPU ") == "cpu" and check_device("cuda:1") == "cuda:1" and check_device("auto") == "auto"
    assert physical_cores() >= 1


def test_unavailable_gpu_fails_on_load_not_silently() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    emb = UseMultilingualEmbeddings(device="cuda")
    with pytest.raises(EmbeddingError, match="CUDA"):
        emb.encode(["x"])


# --------------------------------------------------------------------------- model dir reading


def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def test_read_st_dir_new_and_legacy_pooling(tmp_path: Path) -> None:
    info = read_st_dir(bundled_minilm_path())
    assert (info.pooling, info.dimension, info.max_seq_length, info.onnx_compatible) == ("mean", 384, 256, True)

    d = tmp_path / "bge-like"
    _write(d / "config.json", {"hidden_size": 1024})
    _write(d / "modules.json", [{"type": "sentence_transformers.models.Transformer", "path": ""},
                                {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"},
                                {"type": "sentence_transformers.models.Normalize", "path": "2_Normalize"}])
    _write(d / "1_Pooling" / "config.json", {"embedding_dimension": 1024, "pooling_mode": "cls"})
    _write(d / "config_sentence_transformers.json", {"prompts": {"query": "query: ", "document": ""}})
    info = read_st_dir(d)
    assert (info.pooling, info.dimension, info.query_prompt, info.onnx_compatible) == ("cls", 1024, "query: ", True)
    emb = SentenceTransformerEmbeddings(d, quantize=False)
    assert emb.query_prompt == "query: " and emb.model_id == "st:bge-like"


def test_read_st_dir_with_dense_head_is_not_onnx_compatible(tmp_path: Path) -> None:
    d = tmp_path / "dense"
    _write(d / "config.json", {"hidden_size": 768})
    _write(d / "modules.json", [{"type": "sentence_transformers.models.Transformer", "path": ""},
                                {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"},
                                {"type": "sentence_transformers.models.Dense", "path": "2_Dense"}])
    _write(d / "1_Pooling" / "config.json", {"word_embedding_dimension": 768, "pooling_mode_mean_tokens": True})
    _write(d / "2_Dense" / "config.json", {"in_features": 768, "out_features": 256})
    info = read_st_dir(d)
    assert info.dimension == 256 and info.extra_modules == ("Dense",) and not info.onnx_compatible


def test_bare_transformers_dir_defaults_to_mean_pooling(tmp_path: Path) -> None:
    d = tmp_path / "bare"
    _write(d / "config.json", {"hidden_size": 312})
    info = read_st_dir(d)
    assert (info.pooling, info.dimension) == ("mean", 312)


def test_model_id_comes_from_cached_variant_without_loading(tmp_path: Path) -> None:
    emb = SentenceTransformerEmbeddings(bundled_minilm_path(), name="all-MiniLM-L6-v2", device="cpu",
                                        cache_dir=tmp_path)
    folder = cache_folder(emb.info, tmp_path)
    folder.mkdir(parents=True)
    (folder / "model.int8.onnx").write_bytes(b"stub")
    (folder / "variant.json").write_text(json.dumps({"format": FORMAT_VERSION, "file": "model.int8.onnx",
                                                     "variant": "int8", "cos_mean": 0.993}), encoding="utf-8")
    assert cached_variant(folder, True) is not None
    assert emb.model_id == "st:all-MiniLM-L6-v2+int8" and not emb.loaded
    (folder / "variant.json").write_text(json.dumps({"format": -1}), encoding="utf-8")
    assert cached_variant(folder, True) is None


def test_pooling_modes() -> None:
    hidden = np.array([[[1.0, 0.0], [3.0, 2.0], [9.0, 9.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]])
    np.testing.assert_allclose(pool(hidden, mask, "mean"), [[2.0, 1.0]])
    np.testing.assert_allclose(pool(hidden, mask, "cls"), [[1.0, 0.0]])
    np.testing.assert_allclose(pool(hidden, mask, "max"), [[3.0, 2.0]])
    np.testing.assert_allclose(pool(hidden, mask, "lasttoken"), [[3.0, 2.0]])
    np.testing.assert_allclose(pool(hidden, mask, "mean_sqrt_len_tokens"), [[4.0 / np.sqrt(2), 2.0 / np.sqrt(2)]])


# --------------------------------------------------------------------------- sentencepiece reader


def _field(number: int, wire: int, payload: bytes) -> bytes:
    assert number < 16
    if wire == 2:
        return bytes([number << 3 | 2, len(payload)]) + payload
    return bytes([number << 3 | wire]) + payload


def test_read_sentencepiece_pieces_scores_and_charsmap(tmp_path: Path) -> None:
    def piece(text: str, score: float) -> bytes:
        body = _field(1, 2, text.encode()) + _field(2, 5, struct.pack("<f", score)) + _field(3, 0, b"\x01")
        return _field(1, 2, body)

    model = (piece("<unk>", 0.0) + piece("▁hello", -1.5) + piece("世界", -2.25)
             + _field(2, 2, _field(3, 0, b"\x01"))  # trainer spec with a varint
             + _field(3, 2, _field(1, 2, b"nmt_nfkc") + _field(2, 2, b"\x00\x01CHARSMAP")))
    path = tmp_path / "sp.model"
    path.write_bytes(model)
    vocab, charsmap = read_sentencepiece(path)
    assert vocab == [("<unk>", 0.0), ("▁hello", -1.5), ("世界", -2.25)]
    assert charsmap == b"\x00\x01CHARSMAP"
