"""The store contract: FAISS and Milvus Lite behave the same behind `ChunkStore`."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from contract_support import OpenStore, skip_without_milvus

from kbqa.errors import ConfigError, DependencyMissingError, IndexCorruptError, IndexMismatchError, VectorStoreError
from kbqa.schema import Chunk
from kbqa.splitter import chunk_id
from kbqa.store import FileRecord, FileWrite, recorded_vectors

DIM = 16


def unit(rows: int, seed: int, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def file_write(name: str, n: int, seed: int, dim: int = DIM) -> FileWrite:
    """`n` chunks of file `name` with deterministic unit vectors (seeded)."""
    vectors = unit(n, seed, dim)
    chunks = []
    for i in range(n):
        text = f"{name} chunk {i} seed {seed}"
        hex_id, int_id = chunk_id(name, None, i, text)
        chunks.append(Chunk(hex_id, int_id, text, name, f"knowledge/kb/{name}", None, "", i))
    return FileWrite(FileRecord(name, f"sha-{seed}", n, 0.0), chunks, vectors, [c.text for c in chunks],
                     [f"key-{c.id}" for c in chunks])


def ids_of(w: FileWrite) -> list[int]:
    return [c.int_id for c in w.chunks]


def brute_force(writes: list[FileWrite], query: np.ndarray, k: int) -> list[tuple[int, float]]:
    ids = np.array([i for w in writes for i in ids_of(w)], dtype=np.int64)
    x = np.vstack([w.vectors for w in writes if w.vectors is not None])
    scores = x @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(ids[j]), float(scores[j])) for j in order]


def test_empty_store_counts_zero_and_finds_nothing(open_store: OpenStore, backend: str) -> None:
    store = open_store()
    assert store.location.kind == backend
    assert store.count() == 0
    assert store.dense_search(unit(1, 0)[0], 5) == []


def test_add_then_search_order_and_scores_match_exact_cosine(open_store: OpenStore) -> None:
    store = open_store()
    writes = [file_write("a.txt", 30, 1), file_write("b.txt", 20, 2)]
    store.commit(writes)
    store.flush()
    assert store.count() == 50
    for q in unit(5, 9):
        hits = store.dense_search(q, 10)
        expected = brute_force(writes, q, 10)
        assert [i for i, _ in hits] == [i for i, _ in expected]
        np.testing.assert_allclose([s for _, s in hits], [s for _, s in expected], atol=1e-5)
        assert all(a[1] >= b[1] for a, b in itertools.pairwise(hits))
    own = writes[0].vectors[3]  # type: ignore[index]
    (top_id, top_score), *_ = store.dense_search(own, 3)
    assert top_id == writes[0].chunks[3].int_id and top_score == pytest.approx(1.0, abs=1e-5)
    assert len(store.dense_search(own, 500)) == 50  # n larger than the store: everything, once


def test_upsert_replaces_exactly_the_files_chunks(open_store: OpenStore) -> None:
    store = open_store()
    old_a, b = file_write("a.txt", 10, 1), file_write("b.txt", 10, 2)
    store.commit([old_a, b])
    new_a = file_write("a.txt", 4, 3)
    store.commit([new_a])
    store.flush()
    assert store.count() == 14
    everything = {i for i, _ in store.dense_search(unit(1, 5)[0], 100)}
    assert everything == set(ids_of(new_a)) | set(ids_of(b))
    assert store.files()["a.txt"].n_chunks == 4


def test_delete_by_file_removes_its_vectors(open_store: OpenStore) -> None:
    store = open_store()
    a, b = file_write("a.txt", 10, 1), file_write("b.txt", 10, 2)
    store.commit([a, b])
    store.commit([], removed=["a.txt"])
    store.flush()
    assert store.count() == 10 and set(store.files()) == {"b.txt"}
    assert {i for i, _ in store.dense_search(a.vectors[0], 100)} == set(ids_of(b))  # type: ignore[index]
    store.commit([], removed=["b.txt"])
    assert store.count() == 0 and store.dense_search(a.vectors[0], 5) == []  # type: ignore[index]


def test_reopen_keeps_everything(open_store: OpenStore) -> None:
    store = open_store()
    writes = [file_write("a.txt", 12, 1), file_write("b.txt", 8, 2)]
    store.commit(writes)
    store.flush()
    q = unit(1, 7)[0]
    before = store.dense_search(q, 5)
    store.close()
    again = open_store()
    assert again.count() == 20
    assert again.vectors.generation == again.catalog.generation
    assert [i for i, _ in again.dense_search(q, 5)] == [i for i, _ in before]


def test_stale_vectors_are_resynced_from_the_catalog(open_store: OpenStore) -> None:
    store = open_store()
    a = file_write("a.txt", 10, 1)
    store.commit([a])
    store.flush()
    # A crash between the SQLite commit and the vector write: the catalog moved on, the vectors did not.
    b = file_write("b.txt", 6, 2)
    store.catalog.commit([b], removed=["a.txt"])
    store.close()
    again = open_store()
    assert again.vectors.generation == again.catalog.generation
    assert again.count() == 6
    hits = again.dense_search(b.vectors[2], 10)  # type: ignore[index]
    assert hits[0][0] == b.chunks[2].int_id and {i for i, _ in hits} == set(ids_of(b))
    # The manifest, as stale as the vectors after the crash, is rewritten with them.
    manifest = json.loads((again.directory / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["generation"] == again.catalog.generation and set(manifest["files"]) == {"b.txt"}


def test_fingerprint_mismatch_names_the_rebuild(open_store: OpenStore) -> None:
    store = open_store()
    store.commit([file_write("a.txt", 3, 1)])
    store.flush()
    store.close()
    with pytest.raises(IndexMismatchError, match="kbqa index --rebuild"):
        open_store(dimension=DIM * 2)


def test_vectors_of_the_wrong_dimension_are_refused(open_store: OpenStore) -> None:
    store = open_store()
    with pytest.raises(IndexCorruptError, match="16-d"):
        store.commit([file_write("a.txt", 3, 1, dim=DIM + 1)])
    assert store.catalog.generation == 0 and store.count() == 0  # refused before anything was written
    with pytest.raises(IndexCorruptError, match="dimension"):
        store.vectors.add(np.array([1, 2]), unit(2, 1, DIM - 1))


def test_backend_is_recorded_and_kept_whatever_the_settings_say(open_store: OpenStore, backend: str,
                                                                 tmp_path: Path) -> None:
    store = open_store()
    store.commit([file_write("a.txt", 5, 1)])
    store.flush()
    recorded = store.location.uri
    store.close()
    assert recorded_vectors(tmp_path / "idx") == recorded
    other = "milvus-lite" if backend == "faiss" else "faiss"
    again = open_store(vectors=other)  # a new default does not move an existing index
    assert again.location.uri == recorded and again.count() == 5


@pytest.mark.parametrize("target", ["faiss", "milvus-lite", "milvus-lite://moved/kb.db"])
def test_migrate_copies_vectors_without_reembedding(open_store: OpenStore, target: str, tmp_path: Path) -> None:
    if target != "faiss":
        skip_without_milvus()
    store = open_store()
    writes = [file_write("a.txt", 25, 1), file_write("b.txt", 15, 2)]
    store.commit(writes)
    store.flush()
    q = unit(3, 4)
    before = [store.dense_search(v, 8) for v in q]
    old_uri = store.location.uri
    store.migrate_vectors(target)
    after = [store.dense_search(v, 8) for v in q]
    assert [[i for i, _ in hits] for hits in after] == [[i for i, _ in hits] for hits in before]
    store.close()
    again = open_store()
    assert again.count() == 40
    assert recorded_vectors(tmp_path / "idx") == again.location.uri
    if again.location.uri != old_uri:
        assert again.location.uri.startswith(target.split("://")[0])
    assert [[i for i, _ in again.dense_search(v, 8)] for v in q] == [[i for i, _ in hits] for hits in before]
    again.commit([file_write("c.txt", 5, 3)])  # and it keeps working as the new backend
    assert again.count() == 45


def test_interrupted_migrate_leaves_the_old_backend_in_use(open_store: OpenStore, backend: str,
                                                             monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    skip_without_milvus()
    store = open_store()
    store.commit([file_write("a.txt", 20, 1)])
    store.flush()
    old_uri = store.location.uri
    target = "milvus-lite" if backend == "faiss" else "faiss"

    def killed(*_: object) -> None:
        raise KeyboardInterrupt

    batches = store.catalog.iter_vectors

    def half_then_die(batch: int = 50_000):  # type: ignore[no-untyped-def]
        yield from batches(batch=10)
        killed()

    monkeypatch.setattr(store.catalog, "iter_vectors", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        store.migrate_vectors(target)
    monkeypatch.undo()
    assert store.location.uri == old_uri and store.count() == 20
    store.close()
    again = open_store()
    assert again.location.uri == old_uri == recorded_vectors(tmp_path / "idx")
    assert again.count() == 20


def test_catalogs_sharing_one_milvus_keep_apart(tmp_path: Path) -> None:
    skip_without_milvus()
    from kbqa.store import ChunkStore
    from kbqa.store.backends import parse_vector_uri
    from kbqa.store.milvus import MilvusVectors

    shared = f"milvus-lite://{tmp_path / 'shared.db'}"

    def open_at(folder: str) -> ChunkStore:  # two homes, one knowledge base name, one Milvus
        return ChunkStore(tmp_path / folder, _fingerprint(), vectors=shared, collection="manuals")

    first, second = open_at("one"), open_at("two")
    assert first.collection != second.collection and first.collection.startswith("kbqa_manuals_")
    first.commit([file_write("a.txt", 7, 1)])
    second.commit([file_write("b.txt", 3, 2)])
    assert first.count() == 7 and second.count() == 3
    assert {i for i, _ in second.dense_search(unit(1, 1)[0], 20)} == set(ids_of(file_write("b.txt", 3, 2)))
    name = first.collection
    first.close()
    second.close()
    # A collection recorded by another catalog (a copied index folder) is not trusted: stale, rebuilt on open.
    location = parse_vector_uri(shared)
    foreign = MilvusVectors(location, tmp_path, name, DIM, store_id="someone-else")
    assert not foreign.owned and foreign.generation == -1
    foreign.close()


def _fingerprint() -> dict[str, dict[str, object]]:
    return {"embedding": {"model_id": "fake", "dimension": DIM, "normalized": True}}


def test_unreachable_milvus_server_is_a_clear_error_naming_the_uri(tmp_path: Path) -> None:
    skip_without_milvus()
    from kbqa.store import ChunkStore

    with pytest.raises(VectorStoreError, match=r"Milvus at http://127\.0\.0\.1:1 .*connect") as err:
        ChunkStore(tmp_path / "idx", _fingerprint(), vectors="http://admin:s3cret@127.0.0.1:1")
    assert "s3cret" not in str(err.value)


def test_missing_pymilvus_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kbqa.store import ChunkStore

    monkeypatch.setitem(sys.modules, "pymilvus", None)  # import fails as if not installed
    with pytest.raises(DependencyMissingError, match="pip install pymilvus"):
        ChunkStore(tmp_path / "idx", _fingerprint(), vectors="milvus-lite")


def test_bad_vector_uris_are_config_errors() -> None:
    from kbqa.store.backends import parse_vector_uri

    for bad in ("ftp://host/x", "milvus-lite://folder/without-suffix", "http://:19530", "vectors.sqlite"):
        with pytest.raises(ConfigError):
            parse_vector_uri(bad)
    assert parse_vector_uri("http://u:p@host:19530/db").uri == "http://host:19530/db"
    assert parse_vector_uri("milvus:///srv/kb.db").target == "/srv/kb.db"
    assert parse_vector_uri("", backend="milvus").uri == "milvus-lite://vectors.milvus.db"
    from kbqa.config import load_settings

    with pytest.raises(ConfigError, match=r"store\.uri"):
        load_settings(store={"uri": "ftp://host/x"})
    assert load_settings(store={"backend": "milvus"}).store.vector_uri == "milvus-lite"
    assert load_settings(store={"backend": "milvus", "uri": "faiss"}).store.vector_uri == "faiss"
