"""A whole knowledge base on each backend: same files in, same search results out."""

from __future__ import annotations

from pathlib import Path

from unit.conftest import FakeLoaders

from kbqa.config import load_settings
from kbqa.kb import KnowledgeBase
from kbqa.testing import FakeEmbeddings

DOCS = {
    "pumps.txt": "Pump P-17 must be primed before start-up.\fValve V3 opens clockwise; valve V4 opens the other way.",
    "grease.txt": "Grease the bearings every 200 hours with lithium grease. Check the seals monthly.",
    "power.txt": "本设备的额定电压为二百二十伏特，最大功率为一千五百瓦。",
    "notes/safety.txt": "Wear gloves. Lock out the power before opening the panel. Never bypass the interlock.",
}
QUERIES = ["which way does valve V3 open", "how often to grease bearings", "额定电压", "lock out power panel"]


def _write(folder: Path, docs: dict[str, str]) -> None:
    for name, text in docs.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _kb(home: Path, uri: str) -> KnowledgeBase:
    settings = load_settings(home=home, splitter={"chunk_size": 60, "chunk_overlap": 10}, store={"uri": uri})
    return KnowledgeBase.create("manuals", settings, exist_ok=True, embeddings=FakeEmbeddings(),
                                loaders=FakeLoaders())


def _results(kb: KnowledgeBase) -> list[list[tuple[str, float]]]:
    return [[(s.chunk_id, round(s.score, 4)) for s in kb.search(q, k=5)] for q in QUERIES]


def test_knowledge_base_searches_alike_on_every_backend(backend: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write(src, DOCS)
    reference = _kb(tmp_path / "ref", "faiss")
    reference.add(src)
    kb = _kb(tmp_path / "home", backend)
    kb.add(src)
    assert kb.store.location.kind == backend
    assert kb.stats()["chunks"] == reference.stats()["chunks"] > 4
    assert _results(kb) == _results(reference)

    # Change one file and delete another: both stores follow.
    _write(src, {"grease.txt": "Grease the bearings every 500 hours now. Seals are checked weekly."})
    (src / "notes/safety.txt").unlink()
    for base in (reference, kb):
        base.add(src)
    assert _results(kb) == _results(reference)

    kb.rebuild()  # keeps the KB's backend
    assert kb.store.location.kind == backend and _results(kb) == _results(reference)
    kb.close()
    again = KnowledgeBase.open("manuals", kb.settings, embeddings=FakeEmbeddings(), loaders=FakeLoaders())
    assert _results(again) == _results(reference)
    again.close()
    reference.close()
    KnowledgeBase.delete("manuals", kb.settings)
    assert not again.index_dir.exists()


def _collections(lite: Path) -> list[str]:
    from milvus_lite.server_manager import server_manager_instance
    from pymilvus import MilvusClient

    client = MilvusClient(str(lite))
    try:
        return sorted(client.list_collections())
    finally:
        client.close()
        server_manager_instance.release_server(str(lite))


def test_rebuild_and_delete_clean_up_collections_outside_the_index_folder(tmp_path: Path) -> None:
    from contract_support import skip_without_milvus

    skip_without_milvus()
    src, lite = tmp_path / "src", tmp_path / "shared" / "vectors.db"
    _write(src, DOCS)
    kb = _kb(tmp_path / "home", f"milvus-lite://{lite}")
    kb.add(src)
    expected = _results(kb)
    kb.close()
    (before,) = _collections(lite)
    kb.rebuild()  # fills a new collection beside the old one, then drops the old one
    assert _results(kb) == expected
    kb.close()
    (after,) = _collections(lite)
    assert after != before and after.startswith("kbqa_manuals_")
    KnowledgeBase.delete("manuals", kb.settings)
    assert _collections(lite) == []
