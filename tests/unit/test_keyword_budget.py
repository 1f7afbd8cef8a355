"""The keyword search's cost bound: exact under the budget, rare terms first above it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kbqa.schema import Chunk
from kbqa.splitter import chunk_id
from kbqa.store import catalog as catalog_module
from kbqa.store.catalog import Catalog, FileRecord, FileWrite


def _catalog(path: Path, texts: list[str]) -> tuple[Catalog, dict[int, str]]:
    cat = Catalog(path)
    chunks = []
    for i, text in enumerate(texts):
        hex_id, int_id = chunk_id("f.txt", None, i, text)
        chunks.append(Chunk(hex_id, int_id, text, "f.txt", "knowledge/k/f.txt", None, "", i))
    vecs = np.zeros((len(chunks), 4), dtype=np.float32)
    cat.commit([FileWrite(FileRecord("f.txt", "0" * 64, 1, 0.0), chunks, vecs, texts,
                          [str(i) for i in range(len(texts))])])
    return cat, {c.int_id: c.text for c in chunks}


@pytest.fixture()
def corpus(tmp_path: Path) -> tuple[Catalog, dict[int, str]]:
    # "common" in every chunk, "medium" in every 10th, "rare" in three.
    texts = []
    for i in range(600):
        words = ["common", f"filler{i}"]
        if i % 10 == 0:
            words.append("medium")
        if i in (7, 300, 599):
            words.append("rare")
        texts.append(" ".join(words))
    return _catalog(tmp_path / "c.sqlite", texts)


def test_under_the_budget_the_search_is_exact(corpus: tuple[Catalog, dict[int, str]]) -> None:
    cat, _ = corpus
    assert cat.doc_freqs(["common", "medium", "rare"]) == {"common": 600, "medium": 60, "rare": 3}
    hits = cat.keyword_search(["common", "medium", "rare"], 1000)
    assert len(hits) == 600  # every chunk matches "common"


def test_over_the_budget_common_terms_are_left_out(corpus: tuple[Catalog, dict[int, str]],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cat, text = corpus
    monkeypatch.setattr(catalog_module, "KEYWORD_BUDGET", 100)
    hits = cat.keyword_search(["common", "medium", "rare"], 1000)
    # rare (3) + medium (60) fit in 100 postings, common (600) does not: only chunks with either.
    assert len(hits) == sum(1 for t in text.values() if "rare" in t or "medium" in t) == 62
    assert all("rare" in text[i] or "medium" in text[i] for i, _ in hits)
    top3 = {text[i] for i, _ in hits[:3]}
    assert all("rare" in t for t in top3), "the rarest term's chunks still rank first"
    # The caller's document frequencies are used as given (no second lookup needed).
    assert cat.keyword_search(["common", "rare"], 10, {"common": 600, "rare": 3}) == \
        cat.keyword_search(["common", "rare"], 10)


def test_a_too_common_single_term_scores_a_uniform_sample(corpus: tuple[Catalog, dict[int, str]],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cat, _ = corpus
    monkeypatch.setattr(catalog_module, "KEYWORD_BUDGET", 150)
    hits = cat.keyword_search(["common"], 1000)
    # About budget/df = 1/4 of the 600 postings (ids are uniform hashes), never all of them.
    assert 80 <= len(hits) <= 230
    assert cat.keyword_search(["common"], 1000) == hits, "the sample is deterministic"


def test_unknown_terms_match_nothing(corpus: tuple[Catalog, dict[int, str]]) -> None:
    cat, _ = corpus
    assert cat.keyword_search(["nowhere"], 10) == []
    assert cat.keyword_search([], 10) == []


def test_term_counts_follow_every_commit(tmp_path: Path) -> None:
    cat, _ = _catalog(tmp_path / "c.sqlite", ["alpha beta", "alpha gamma", "alpha alpha"])
    assert cat.doc_freqs(["alpha", "beta", "gamma", "delta"]) == {"alpha": 3, "beta": 1, "gamma": 1}
    # Replacing the file's chunks replaces its counts; terms no chunk holds any more disappear.
    hex_id, int_id = chunk_id("f.txt", None, 0, "delta")
    cat.commit([FileWrite(FileRecord("f.txt", "1" * 64, 1, 0.0),
                          [Chunk(hex_id, int_id, "delta", "f.txt", "p", None, "", 0)],
                          np.zeros((1, 4), dtype=np.float32), ["delta"], ["k"])])
    assert cat.doc_freqs(["alpha", "beta", "delta"]) == {"delta": 1}
    cat.commit([], ["f.txt"])
    assert cat.doc_freqs(["delta"]) == {}
    assert cat._db.execute("SELECT count(*) FROM term_df").fetchone()[0] == 0


def test_catalogs_from_before_term_counts_get_them_on_open(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cat, _ = _catalog(path, ["alpha beta", "alpha gamma"])
    cat._db.execute("DELETE FROM term_df")
    cat._db.execute("DELETE FROM meta WHERE key='term_df'")
    cat.close()
    assert Catalog(path).doc_freqs(["alpha", "beta"]) == {"alpha": 2, "beta": 1}
