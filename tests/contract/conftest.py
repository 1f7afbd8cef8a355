"""Store contract suite: every vector backend behind `ChunkStore` must pass the same tests.

`backend` is parametrized over FAISS and embedded Milvus Lite (skipped, with the reason, when
pymilvus / milvus-lite are not installed). The network is blocked; Milvus Lite serves on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from contract_support import BACKENDS, OpenStore, milvus_missing

from kbqa.store import ChunkStore


@pytest.fixture(autouse=True)
def _block_network(no_network: None) -> None:
    """Contract tests never leave the machine (Milvus Lite listens on 127.0.0.1)."""


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The vector URI of each backend under test."""
    if request.param != "faiss":
        reason = milvus_missing()
        if reason:
            pytest.skip(reason)
    return str(request.param)


@pytest.fixture
def open_store(tmp_path: Path, backend: str) -> Iterator[OpenStore]:
    """`open_store(**kw)` opens (or reopens) the contract store in one folder; all are closed at the end."""
    opened: list[ChunkStore] = []

    def make(dimension: int = 16, directory: Path | None = None, **kw: Any) -> ChunkStore:
        fingerprint = {"embedding": {"model_id": f"fake-{dimension}", "dimension": dimension, "normalized": True}}
        store = ChunkStore(directory or tmp_path / "idx", fingerprint, vectors=kw.pop("vectors", backend),
                           collection="kbqa_contract", **kw)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()  # closing twice is harmless

