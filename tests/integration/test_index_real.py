"""The whole pipeline with the real loaders and the bundled default embedding model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixture_files import FACT_PAGES, FAIL_PREFIX, build_mixed_folder
from kbqa.config import load_settings
from kbqa.embeddings import make_embeddings
from kbqa.kb import KnowledgeBase

ROOT = Path(__file__).resolve().parents[2]

QUESTIONS = [  # (question, file, page or None)
    ("How much water is needed to prime the pump before the first start?", "manual.pdf", 2),
    ("When should the carbon brushes be replaced?", "manual.pdf", 3),
    ("What is the scanner calibration code?", "scanned.pdf", 1),
    ("这台设备的额定电压和最大功率是多少？", "gbk_manual.txt", None),
    ("管理员可以手动备份数据库吗？", "mojibake.txt", None),
    ("產品保固多久？", "big5_warranty.txt", None),
    ("Which port has to be open for the dashboard?", "network.html", None),
    ("What is the emergency hotline number?", "utf16_contacts.txt", None),
]


@pytest.fixture(scope="module")
def embeddings():  # type: ignore[no-untyped-def]
    """One real model for the module (loading it is the slow part)."""
    return make_embeddings(load_settings(environ={}).embedding)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, embeddings):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("mixed")
    facts = build_mixed_folder(root / "src")
    (root / "src" / "huge-one-line.txt").write_bytes(b"a" * (50 * 1024 * 1024))  # 50 MB, no line break
    settings = load_settings(environ={}, home=root / "home")
    kb = KnowledgeBase.create("mixed", settings, embeddings=embeddings)
    report = kb.add(root / "src")
    return kb, report, facts, root


def test_every_good_file_indexes_and_every_bad_file_is_reported(mixed) -> None:  # type: ignore[no-untyped-def]
    _, report, facts, _ = mixed
    status = {f.file: f for f in report.files}
    for name, fact in facts.items():
        if fact.startswith(FAIL_PREFIX):
            assert status[name].status == "failed", name
            assert fact[len(FAIL_PREFIX):].lower() in status[name].reason.lower(), (name, status[name].reason)
        else:
            assert status[name].status == "added" and status[name].chunks > 0, (name, status[name])
    huge = status["huge-one-line.txt"]
    assert huge.status == "failed" and "MB" in huge.reason
    assert any("OCR" in w for w in status["scanned.pdf"].warnings)
    assert any("mojibake" in w for w in status["mojibake.txt"].warnings)
    assert not report.ok


@pytest.mark.parametrize(("question", "file", "page"), QUESTIONS)
def test_questions_find_the_right_file_and_page(mixed, question: str, file: str, page: int | None) -> None:  # type: ignore[no-untyped-def]
    kb = mixed[0]
    hits = kb.search(question, k=3)
    assert hits, question
    top = [(h.file, h.page) for h in hits]
    assert any(f == file and (page is None or p == page) for f, p in top), (question, top)
    assert hits[0].score > 0.3 and all(0 <= h.score <= 1 for h in hits)


def test_fact_pages_match_fixture(mixed) -> None:  # type: ignore[no-untyped-def]
    kb, _, facts, _ = mixed
    for name, page in FACT_PAGES.items():
        hits = kb.search(facts[name], k=1)
        assert hits[0].file == name and hits[0].page == page, (name, hits[0])


def test_incremental_reindex_embeds_nothing_then_replaces_exactly(mixed) -> None:  # type: ignore[no-untyped-def]
    kb, _, _, root = mixed
    again = kb.add(root / "src")
    assert again.chunks_embedded == 0
    assert {f.status for f in again.files} <= {"unchanged", "failed"}
    (root / "src" / "guide.md").write_text("# Cache\n\nThe cache lives in /var/cache/kbqa now.\n", encoding="utf-8")
    os.remove(root / "src" / "config.json")
    report = kb.add(root / "src")
    by = {f.file: f.status for f in report.files}
    assert by["guide.md"] == "updated" and by["config.json"] == "removed"
    assert report.chunks_embedded <= 2
    assert kb.search("where does the cache live", k=1)[0].file == "guide.md"
    assert all(h.file != "config.json" for h in kb.search("ingest worker retries failed jobs", k=10))


def test_cli_on_the_sample_knowledge_base(tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(ROOT / "knowledge" / "samples", home / "knowledge" / "samples")
    env = {**os.environ, "KBQA_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    kbqa = [sys.executable, "-m", "kbqa.cli"]
    res = subprocess.run([*kbqa, "index", "--kb", "samples", "--json"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["counts"]["added"] == 3
    res = subprocess.run([*kbqa, "search", "how do I descale the machine", "--kb", "samples", "--json"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    top = json.loads(res.stdout)["sources"][0]
    assert top["file"] == "aurora-x2-manual.pdf" and top["page"] == 3 and top["heading"] == "3 Cleaning and descaling"
    res = subprocess.run([*kbqa, "search", "除垢程序需要多长时间？", "--kb", "samples", "--json"], env=env,
                         capture_output=True, text=True, timeout=300)
    top = json.loads(res.stdout)["sources"][0]
    assert top["file"] == "极光X2说明书.txt" and "二十五分钟" in top["text"]


def test_parsing_in_worker_processes_gives_the_same_index(tmp_path: Path, embeddings) -> None:  # type: ignore[no-untyped-def]
    build_mixed_folder(tmp_path / "src")
    ids = []
    for workers in (0, 1):
        settings = load_settings(environ={}, home=tmp_path / f"home{workers}", loaders={"workers": workers})
        kb = KnowledgeBase.create("w", settings, embeddings=embeddings)
        report = kb.add(tmp_path / "src")
        assert len(report.added) == 13
        ids.append(kb.store.catalog.chunk_ids_by_file())
        kb.close()
    assert ids[0] == ids[1]
