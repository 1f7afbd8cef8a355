"""Approximate FAISS indexes in the store: training, search before training, recall, removal, files."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from kbqa.errors import ConfigError
from kbqa.schema import Chunk
from kbqa.store import ChunkStore, FileRecord, FileWrite
from kbqa.store.vectors import VectorIndex, parse_spec, training_size

DIM = 32


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors in 200 clusters, each a 4-d patch plus a little noise (low intrinsic dimension,
    like sentence embeddings). The clusters are the same for every seed; the points differ."""
    shape = np.random.default_rng(1234)
    centres = shape.standard_normal((200, DIM))
    patches = shape.standard_normal((200, 4, DIM))
    rng = np.random.default_rng(seed)
    which = rng.integers(0, 200, n)
    x = centres[which] + 0.3 * np.einsum("ns,nsd->nd", rng.standard_normal((n, 4)), patches[which])
    x += 0.02 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def ids_for(n: int, start: int = 0) -> np.ndarray:
    return (np.arange(start, start + n, dtype=np.int64) * 7919 + 11) % (2**62)


def top(index: VectorIndex, queries: np.ndarray, k: int = 10) -> list[list[int]]:
    return [[i for i, _ in index.search(q, k)] for q in queries]


def recall(got: list[list[int]], want: list[list[int]]) -> float:
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want, strict=True)]))


def flat_of(ids: np.ndarray, x: np.ndarray) -> VectorIndex:
    flat = VectorIndex(DIM, "Flat")
    flat.add(ids, x)
    return flat


def test_spec_parsing_and_training_sizes() -> None:
    assert parse_spec("HNSW32,SQ8") == ("HNSW32,SQ8", {})
    assert parse_spec(" IVF64,SQ8 ; nprobe=16, efSearch=5") == ("IVF64,SQ8", {"nprobe": 16.0, "efSearch": 5.0})
    with pytest.raises(ConfigError, match="NAME=NUMBER"):
        parse_spec("HNSW32;efSearch")
    with pytest.raises(ConfigError, match="not a valid faiss"):
        VectorIndex(DIM, "NoSuchIndex99")
    with pytest.raises(ConfigError, match="no search parameter 'nprobe'"):
        VectorIndex(DIM, "HNSW16;nprobe=4")
    assert VectorIndex(DIM, "HNSW16").training_size == 0
    assert VectorIndex(DIM, "IVF256,SQ8").training_size == 40 * 256
    assert VectorIndex(DIM, "IVF16,PQ8").training_size == 40 * 256  # PQ's 256 centroids dominate
    assert training_size(VectorIndex(DIM, "HNSW16,SQ8")._inner) == 2_000
    assert VectorIndex(DIM, "HNSW16;efSearch=77")._inner.hnsw.efSearch == 77
    assert VectorIndex(DIM, "HNSW16")._inner.hnsw.efSearch == 512  # default keeps recall high
    assert VectorIndex(DIM, "IVF1024,Flat")._inner.nprobe == 16  # nlist / 64


def test_search_is_exact_until_enough_vectors_to_train_then_trains() -> None:
    x, q = clustered(3_000), clustered(20, seed=1)
    ids = ids_for(3_000)
    ivf = VectorIndex(DIM, "IVF32,Flat")
    assert ivf.training_size == 2_000
    ivf.add(ids[:1_500], x[:1_500])
    assert ivf.needs_training and ivf.size == 1_500
    assert top(ivf, q) == top(flat_of(ids[:1_500], x[:1_500]), q)  # exact over the buffer
    ivf.remove([int(ids[0]), int(ids[1])])
    assert ivf.size == 1_498
    ivf.add(ids[:2], x[:2])
    ivf.add(ids[1_500:], x[1_500:])  # now 3,000 >= 2,000: trained on everything buffered
    assert not ivf.needs_training and ivf._inner.is_trained and ivf.size == 3_000
    assert recall(top(ivf, q), top(flat_of(ids, x), q)) >= 0.95


@pytest.mark.parametrize("factory", ["HNSW16", "HNSW16,SQ8", "IVF32,SQ8"])
def test_approximate_recall_against_flat_on_clustered_data(factory: str) -> None:
    x, q = clustered(6_000), clustered(50, seed=2)
    ids = ids_for(6_000)
    ann = VectorIndex(DIM, factory)
    for start in range(0, 6_000, 500):  # incremental adds, as the indexer does
        ann.add(ids[start : start + 500], x[start : start + 500])
    assert not ann.needs_training
    assert recall(top(ann, q), top(flat_of(ids, x), q)) >= 0.95


def test_hnsw_removal_skips_dead_entries_and_compacts() -> None:
    x, q = clustered(2_000), clustered(20, seed=3)
    ids = ids_for(2_000)
    hnsw = VectorIndex(DIM, "HNSW16")
    hnsw.add(ids, x)
    gone = [int(i) for i in ids[:300]]
    hnsw.remove(gone)  # 15 %: tombstones
    assert hnsw.size == 1_700 and len(hnsw._dead) == 300
    found = {i for row in top(hnsw, np.vstack([x[:50], q]), 20) for i in row}
    assert not found & set(gone)
    hnsw.add(ids[:10], x[:10])  # re-added: found again, exactly once
    row = [i for i, _ in hnsw.search(x[0], 5)]
    assert row[0] == ids[0] and row.count(int(ids[0])) == 1
    hnsw.remove([int(i) for i in ids[300:700]])  # 700 dead of 2,010 >= 25 %: compacted
    assert not hnsw._dead and hnsw.index.ntotal == hnsw.size == 1_310
    keep = np.concatenate([ids[:10], ids[700:]])
    assert recall(top(hnsw, q), top(flat_of(keep, np.vstack([x[:10], x[700:]])), q)) >= 0.95


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "HNSW16,SQ8", "IVF32,SQ8"])
def test_save_load_round_trip_keeps_state_results_and_generation(factory: str, tmp_path: Path) -> None:
    x, q = clustered(3_000), clustered(10, seed=4)
    ids = ids_for(3_000)
    path = tmp_path / "vectors.faiss"
    for n in (1_000, 3_000):  # before (buffer) and after training
        index = VectorIndex(DIM, factory)
        index.add(ids[:n], x[:n])
        index.remove([int(ids[5])])
        index.save(path, generation=n)
        loaded = VectorIndex.load(path, DIM, factory)
        assert loaded is not None
        assert loaded.generation == n and loaded.size == index.size == n - 1
        assert loaded.needs_training == index.needs_training
        assert top(loaded, q) == top(index, q)
        assert not list(tmp_path.glob("*.tmp"))
    # Search parameters may change without a rebuild; the index type may not.
    retuned = VectorIndex.load(path, DIM, factory + ";efSearch=200" if "HNSW" in factory else factory)
    assert retuned is not None
    if "HNSW" in factory:
        assert retuned._inner.hnsw.efSearch == 200
    assert VectorIndex.load(path, DIM, "IVF64,Flat") is None
    assert VectorIndex.load(path, DIM + 1, factory) is None
    path.write_bytes(path.read_bytes()[:200])
    assert VectorIndex.load(path, DIM, factory) is None
    assert VectorIndex.load(tmp_path / "missing.faiss", DIM, factory) is None


def test_reads_files_of_the_previous_format(tmp_path: Path) -> None:
    import faiss

    x = clustered(100)
    old = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    old.add_with_ids(x, ids_for(100))
    path = tmp_path / "vectors.faiss"
    path.write_bytes(struct.pack("<8sQ", b"KBQAFAIS", 7) + faiss.serialize_index(old).tobytes())
    loaded = VectorIndex.load(path, DIM, "Flat")
    assert loaded is not None and loaded.generation == 7 and loaded.size == 100
    assert loaded.search(x[3], 1)[0][0] == ids_for(100)[3]
    assert VectorIndex.load(path, DIM, "HNSW16") is None  # built as Flat: rebuild for HNSW


def _write(n: int, start: int, x: np.ndarray) -> FileWrite:
    chunks = [Chunk(f"c{i}", int(ids_for(1, i)[0]), f"text {i}", f"f{start}.txt", f"f{start}.txt", None, "", 0)
              for i in range(start, start + n)]
    return FileWrite(FileRecord(f"f{start}.txt", "sha", 1, 0.0), chunks, x[start : start + n],
                     [f"text {i}" for i in range(start, start + n)], [f"k{i}" for i in range(start, start + n)])


def test_store_trains_from_the_catalog_when_rebuilding(tmp_path: Path) -> None:
    x, q = clustered(2_400), clustered(10, seed=5)
    fingerprint = {"embedding": {"model_id": "m", "dimension": DIM, "normalized": True}}
    store = ChunkStore(tmp_path, fingerprint, "IVF16,SQ8")
    store.commit([_write(1_200, 0, x)])
    assert store.vectors.needs_training  # 1,200 < 2,000: exact buffer, saved as such
    store.flush()
    store.close()
    store = ChunkStore(tmp_path, fingerprint, "IVF16,SQ8")
    assert store.vectors.needs_training and store.count() == 1_200
    store.commit([_write(1_200, 1_200, x)])
    assert not store.vectors.needs_training and store.count() == 2_400
    store.close()
    (tmp_path / "vectors.faiss").unlink()  # lost: rebuilt and trained from the catalog's vectors
    store = ChunkStore(tmp_path, fingerprint, "IVF16,SQ8")
    assert not store.vectors.needs_training and store.count() == 2_400
    flat = flat_of(ids_for(2_400), x)
    assert recall([[i for i, _ in store.dense_search(v, 10)] for v in q], top(flat, q)) >= 0.95
    store.close()
    store = ChunkStore(tmp_path, fingerprint, "HNSW16")  # another index type: rebuilt, not reused
    assert store.count() == 2_400 and store.vectors.factory == "HNSW16"
    store.close()


def test_knowledge_base_on_hnsw_updates_and_removes_files(home: Path, fake_loaders, tmp_path: Path) -> None:
    from kbqa.config import load_settings
    from kbqa.kb import KnowledgeBase
    from kbqa.testing import FakeEmbeddings

    settings = load_settings(home=home, splitter={"chunk_size": 200, "chunk_overlap": 30},
                             store={"faiss_index": "HNSW16;efSearch=64"})
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"d{i}.txt").write_text(f"Device {i} manual: topic{i} explained. " * 3, encoding="utf-8")
    kb = KnowledgeBase.create("h", settings, embeddings=FakeEmbeddings(), loaders=fake_loaders)
    kb.add(src)
    n = kb.store.count()
    (src / "d1.txt").write_text("Device 1 manual, rewritten: nothing about the old subject.", encoding="utf-8")
    kb.add(src)  # d1's old chunks are removed from HNSW (dead entries) and its new ones added
    kb.remove("d2.txt")
    assert not [s for s in kb.search("topic1 explained", k=10) if "topic1" in s.text]
    assert not [s for s in kb.search("topic2 explained", k=10) if s.file == "d2.txt"]
    count = kb.store.count()
    assert 0 < count < n
    kb.close()
    again = KnowledgeBase.open("h", settings, embeddings=FakeEmbeddings(), loaders=fake_loaders)
    assert again.store.count() == count  # dead entries survived the save
    assert again.search("topic3 explained", k=1)[0].file == "d3.txt"
    again.close()
