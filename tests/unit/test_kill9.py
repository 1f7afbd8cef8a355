"""kill -9 during indexing, at several points: the index always opens, a rerun equals a clean build."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys, time, json
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from kbqa.config import load_settings
    from kbqa.kb import KnowledgeBase
    from kbqa.testing import FakeEmbeddings
    from unit.conftest import FakeLoaders
    import kbqa.index
    kbqa.index.WAVE_CHUNKS = 3
    kbqa.index.ENCODE_CHUNKS = 3

    class Slow(FakeEmbeddings):
        def encode(self, texts, batch_size=None):
            time.sleep(0.01 * len(texts))
            return super().encode(texts, batch_size)

    settings = load_settings(home=Path(sys.argv[1]), splitter={{"chunk_size": 120, "chunk_overlap": 20}})
    kb = KnowledgeBase.create("k", settings, exist_ok=True, embeddings=Slow(), loaders=FakeLoaders())
    report = kb.sync()
    print(json.dumps({{"ids": sorted(c for ids in kb.store.catalog.chunk_ids_by_file().values() for c in ids),
                      "faiss": kb.store.count(), "search": [s.chunk_id for s in kb.search("topic 7 details")]}}))
    """
)


def _docs(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(30):
        (folder / f"d{i:02d}.txt").write_text(f"Document {i} covers topic {i}. It has details number {i}. " * 4,
                                              encoding="utf-8")


def _run(home: Path, script: Path, kill_after: float | None) -> dict[str, object] | None:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen([sys.executable, str(script), str(home)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    if kill_after is not None:
        time.sleep(kill_after)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return None
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill9_at_random_points(tmp_path: Path, seed: int) -> None:
    tests_dir = Path(__file__).resolve().parents[1]
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(tests_dir)), encoding="utf-8")
    clean_home = tmp_path / "clean"
    _docs(clean_home / "knowledge/k")
    clean = _run(clean_home, script, None)
    assert clean is not None
    home = tmp_path / "killed"
    _docs(home / "knowledge/k")
    rng = random.Random(seed)
    for _ in range(2):
        _run(home, script, rng.uniform(1.5, 4.0))  # python start-up + imports take ~1.5 s
    final = _run(home, script, None)
    assert final == clean
