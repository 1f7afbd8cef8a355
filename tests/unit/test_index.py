"""Incremental, atomic indexing with fake loaders and embeddings."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from kbqa.config import Settings
from kbqa.errors import IndexMismatchError, KbqaError, KnowledgeBaseNotFoundError
from kbqa.kb import KnowledgeBase
from kbqa.store import VECTORS_FILE
from kbqa.testing import FakeEmbeddings

DOCS = {
    "alpha.txt": "The alpha reactor uses cooling code ZX-9000 for its primary loop.\fPage two talks about valves.",
    "beta.txt": "Beta manuals describe the lubrication schedule: grease every 200 hours.",
    "sub/gamma.txt": "本设备的额定电压为二百二十伏特，最大功率为一千五百瓦。",
}


def write_docs(folder: Path, docs: dict[str, str] = DOCS) -> None:
    for name, text in docs.items():
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


class CountingEmbeddings(FakeEmbeddings):
    def __init__(self, fail_after: int | None = None, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.encoded = 0
        self.fail_after = fail_after

    def encode(self, texts, batch_size=None):  # type: ignore[no-untyped-def,override]
        if self.fail_after is not None and self.encoded >= self.fail_after:
            raise KeyboardInterrupt
        self.encoded += len(texts)
        return super().encode(texts, batch_size)


def make_kb(settings: Settings, fake_loaders: object, emb: FakeEmbeddings | None = None) -> KnowledgeBase:
    return KnowledgeBase.create("kb1", settings, exist_ok=True, embeddings=emb or CountingEmbeddings(),
                                loaders=fake_loaders)


def chunk_ids(kb: KnowledgeBase) -> set[str]:
    return {c for ids in kb.store.catalog.chunk_ids_by_file().values() for c in ids}


def test_first_index_then_unchanged_embeds_nothing(settings: Settings, fake_loaders, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_docs(src)
    emb = CountingEmbeddings()
    kb = make_kb(settings, fake_loaders, emb)
    report = kb.add(src)
    assert sorted(f.file for f in report.added) == sorted(DOCS)
    assert report.ok and report.chunks_embedded == emb.encoded > 0
    assert (settings.home / "knowledge/kb1/sub/gamma.txt").is_file()  # copied, tree kept
    fake_loaders.loaded.clear()
    emb.encoded = 0
    again = kb.add(src)
    assert [f.status for f in again.files] == ["unchanged"] * 3
    assert emb.encoded == 0 and again.chunks_embedded == 0 and fake_loaders.loaded == []


def test_changed_file_replaces_exactly_its_chunks(settings: Settings, fake_loaders, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_docs(src)
    kb = make_kb(settings, fake_loaders)
    kb.add(src)
    before = kb.store.catalog.chunk_ids_by_file()
    (src / "beta.txt").write_text("Beta manuals now say: grease every 500 hours.", encoding="utf-8")
    report = kb.add(src)
    assert {f.file: f.status for f in report.files}["beta.txt"] == "updated"
    after = kb.store.catalog.chunk_ids_by_file()
    assert after["alpha.txt"] == before["alpha.txt"] and after["sub/gamma.txt"] == before["sub/gamma.txt"]
    assert not set(after["beta.txt"]) & set(before["beta.txt"])
    assert kb.store.count() == kb.store.catalog.count_chunks()
    assert "500" in kb.search("how often grease", k=1)[0].text


def test_deleted_file_leaves_no_chunk_in_either_index(settings: Settings, fake_loaders, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_docs(src)
    kb = make_kb(settings, fake_loaders)
    kb.add(src)
    (src / "alpha.txt").unlink()
    report = kb.add(src)
    assert [f.file for f in report.removed] == ["alpha.txt"]
    assert not (kb.knowledge_dir / "alpha.txt").exists()
    assert kb.store.keyword_search(["zx"], 10) == []
    assert all(s.file != "alpha.txt" for s in kb.search("alpha reactor cooling code", k=10))
    assert kb.store.count() == kb.store.catalog.count_chunks()
    kb.remove(settings.home / "knowledge/kb1/beta.txt")  # a path works as well as the name
    assert not (kb.knowledge_dir / "beta.txt").exists()
    assert [f["file"] for f in kb.files()] == ["sub/gamma.txt"]
    with pytest.raises(KbqaError, match="not a file"):
        kb.remove("nope.txt")


def test_bad_files_are_reported_and_the_rest_indexes(settings: Settings, fake_loaders, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_docs(src)
    (src / "empty.txt").write_bytes(b"")
    (src / "binary.txt").write_bytes(b"\x00\x01\x02" * 100)
    (src / "notes.xyz").write_text("unsupported", encoding="utf-8")
    kb = make_kb(settings, fake_loaders)
    report = kb.add(src)
    failed = {f.file: f.reason for f in report.failed}
    assert failed == {"empty.txt": "empty file", "binary.txt": "looks like binary data, not text",
                      "notes.xyz": "unsupported file type '.xyz'"}
    assert len(report.added) == 3 and not report.ok
    fake_loaders.loaded.clear()
    again = kb.sync()  # failures are remembered by hash: reported again, not re-parsed
    assert {f.file for f in again.failed} == {"empty.txt", "binary.txt"}
    assert fake_loaders.loaded == []


def test_other_embedding_model_is_a_clear_error(settings: Settings, fake_loaders, tmp_path: Path) -> None:
    write_docs(tmp_path / "src")
    make_kb(settings, fake_loaders).add(tmp_path / "src")
    other = KnowledgeBase.open("kb1", settings, embeddings=FakeEmbeddings(dimension=32), loaders=fake_loaders)
    with pytest.raises(IndexMismatchError, match=r"kbqa index --kb kb1 --rebuild"):
        other.search("anything")
    report = other.rebuild()
    assert len(report.added) == 3 and other.stats()["embedding"]["dimension"] == 32


def test_interrupted_build_keeps_committed_waves_and_rerun_matches_clean(
    settings: Settings, fake_loaders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kbqa.index.WAVE_CHUNKS", 2)
    monkeypatch.setattr("kbqa.index.ENCODE_CHUNKS", 2)
    src = tmp_path / "src"
    docs = {f"doc{i:02d}.txt": f"Document {i} explains topic {i} in detail. " * 3 for i in range(12)}
    write_docs(src, docs)
    kb = make_kb(settings, fake_loaders, CountingEmbeddings(fail_after=4))
    with pytest.raises(KeyboardInterrupt):
        kb.add(src)
    kb.close()
    partial = KnowledgeBase.open("kb1", settings, embeddings=CountingEmbeddings(), loaders=fake_loaders)
    n_partial = len(partial.files())
    assert 0 < n_partial < 12
    assert partial.store.count() == partial.store.catalog.count_chunks()  # FAISS consistent after reopen
    finish = partial.sync()
    assert len(finish.unchanged) == n_partial and len(finish.added) == 12 - n_partial
    clean_settings = settings.model_copy(update={"home": tmp_path / "clean"})
    clean = make_kb(clean_settings, fake_loaders)
    clean.add(src)
    assert chunk_ids(partial) == chunk_ids(clean)
    assert partial.store.count() == clean.store.count()


def test_stale_or_corrupt_faiss_file_is_rebuilt_from_catalog(settings: Settings, fake_loaders, tmp_path) -> None:
    write_docs(tmp_path / "src")
    kb = make_kb(settings, fake_loaders)
    kb.add(tmp_path / "src")
    expected = [s.chunk_id for s in kb.search("grease schedule")]
    n = kb.store.count()
    kb.close()
    (kb.index_dir / VECTORS_FILE).write_bytes(b"garbage")
    kb2 = KnowledgeBase.open("kb1", settings, embeddings=CountingEmbeddings(), loaders=fake_loaders)
    assert kb2.store.count() == n
    assert [s.chunk_id for s in kb2.search("grease schedule")] == expected


def test_rebuild_swaps_in_new_index_and_recovers_a_cut_swap(settings: Settings, fake_loaders, tmp_path) -> None:
    write_docs(tmp_path / "src")
    kb = make_kb(settings, fake_loaders)
    kb.add(tmp_path / "src")
    ids = chunk_ids(kb)
    kb.rebuild()
    assert chunk_ids(kb) == ids
    kb.close()
    # Simulate a kill between the two renames of a swap.
    old = kb.index_dir.with_name(".kb1.old")
    os.rename(kb.index_dir, old)
    kb3 = KnowledgeBase.open("kb1", settings, embeddings=CountingEmbeddings(), loaders=fake_loaders)
    assert chunk_ids(kb3) == ids


def test_open_missing_kb_names_the_fix(settings: Settings) -> None:
    with pytest.raises(KnowledgeBaseNotFoundError, match="kbqa index PATH --kb nope"):
        KnowledgeBase.open("nope", settings)
    with pytest.raises(KbqaError, match="invalid knowledge base name"):
        KnowledgeBase.open("../evil", settings)


def test_manifest_maps_file_hashes_to_chunk_ids(settings: Settings, fake_loaders, tmp_path: Path) -> None:
    import json

    write_docs(tmp_path / "src")
    kb = make_kb(settings, fake_loaders)
    kb.add(tmp_path / "src")
    manifest = json.loads((kb.index_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["fingerprint"]["embedding"]["model_id"] == kb.embeddings.model_id
    assert manifest["fingerprint"]["splitter"]["chunk_size"] == 200
    files = manifest["files"]
    assert set(files) == set(DOCS)
    assert all(len(f["sha256"]) == 64 and f["chunks"] for f in files.values())
    assert sum(len(f["chunks"]) for f in files.values()) == kb.store.count()


def test_langchain_retriever_and_vectors_are_normalised(settings: Settings, fake_loaders, tmp_path) -> None:
    write_docs(tmp_path / "src")
    kb = make_kb(settings, fake_loaders)
    kb.add(tmp_path / "src")
    docs = kb.as_langchain_retriever(k=2).invoke("grease schedule")
    assert docs and docs[0].metadata["file"] == "beta.txt"
    for _, vecs in kb.store.catalog.iter_vectors():
        assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    shutil.rmtree(tmp_path / "src")


def test_auto_workers_starts_processes_only_for_heavy_batches_with_cores_to_spare() -> None:
    from kbqa.index import MIN_HEAVY_FOR_AUTO, auto_workers

    pdfs = [Path(f"p{i}.PDF") for i in range(MIN_HEAVY_FOR_AUTO)]
    texts = [Path(f"t{i}.md") for i in range(500)]
    assert auto_workers(texts, cpus=16) == 0  # small text files: a thread beats shipping results between processes
    assert auto_workers(pdfs[:-1] + texts, cpus=16) == 0  # too few heavy files to pay for starting a process
    assert auto_workers(pdfs * 100, cpus=2) == 0  # 2 cores: the encoder keeps both busy, the pool measured slower
    assert auto_workers(pdfs + texts, cpus=4) == 1
    assert auto_workers(pdfs * 100, cpus=6) == 3  # half the cores stay with the encoder
    assert auto_workers(pdfs * 100, cpus=64) == 8
