"""kill -9 while a store commits, on each backend: it reopens consistent with its catalog."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from kbqa.store import ChunkStore

DIM = 16
SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from kbqa.schema import Chunk
    from kbqa.store import ChunkStore, FileRecord, FileWrite

    fp = {"embedding": {"model_id": "fake", "dimension": 16, "normalized": True}}
    store = ChunkStore(Path(sys.argv[1]), fp, vectors=sys.argv[2], collection="kbqa_kill9")
    rng = np.random.default_rng(0)
    for n in range(10_000):
        x = rng.normal(size=(5, 16)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        chunks = [Chunk(f"c{n}-{i}", n * 10 + i + 1, f"t{n} {i}", f"f{n % 7}.txt", "", None, "", i) for i in range(5)]
        store.commit([FileWrite(FileRecord(f"f{n % 7}.txt", "s", 1, 0.0), chunks, x, [c.text for c in chunks],
                                [c.id for c in chunks])])
        if n % 3 == 0:
            store.flush()
        if n == 7:
            print("ready", flush=True)
    """
)


def test_kill9_mid_commits_reopens_consistent(backend: str, tmp_path: Path) -> None:
    directory = tmp_path / "idx"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for delay in (0.0, 0.4):
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(directory), backend], stdout=subprocess.PIPE,
                                env=env, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        fp = {"embedding": {"model_id": "fake", "dimension": DIM, "normalized": True}}
        store = ChunkStore(directory, fp, vectors=backend, collection="kbqa_kill9")
        try:
            assert store.count() == store.catalog.count_chunks() == 35  # 7 files of 5 chunks, latest kept
            ids, vecs = next(store.catalog.iter_vectors())
            for i, v in zip(ids[:5], vecs[:5], strict=True):
                top, score = store.dense_search(np.asarray(v), 1)[0]
                assert top == i and score == pytest.approx(1.0, abs=1e-5)
        finally:
            store.close()


def test_milvus_lite_held_by_another_process_is_a_clear_error(tmp_path: Path) -> None:
    from contract_support import skip_without_milvus

    from kbqa.errors import VectorStoreError

    skip_without_milvus()
    lite = tmp_path / "shared.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pymilvus import MilvusClient; MilvusClient(sys.argv[1]); "
         "print('ready', flush=True); time.sleep(60)", str(lite)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        fp = {"embedding": {"model_id": "fake", "dimension": DIM, "normalized": True}}
        with pytest.raises(VectorStoreError, match="in use by another process"):
            ChunkStore(tmp_path / "idx", fp, vectors=f"milvus-lite://{lite}")
    finally:
        holder.kill()
        holder.wait(timeout=30)
    store = ChunkStore(tmp_path / "idx", fp, vectors=f"milvus-lite://{lite}")  # free again once it is gone
    assert store.count() == 0
    store.close()
