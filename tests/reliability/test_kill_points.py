"""50 random kill -9 points during indexing: the previous index always opens, a rerun equals a clean build.

Each indexing run is a child process forked from a `forkserver` that has kbqa imported
already (a fresh interpreter per kill would cost ~1.5 s of imports each). The child is
instrumented: it reports each stage it enters (a file parsed, a batch encoded, inside a
catalog transaction, just after it, the FAISS file or the manifest about to be swapped in,
a deleted file's removal, a wave holding an updated file) and pauses there a few
milliseconds, so a kill can be aimed at a stage; other kills fall at a random time.

Sequences of kills run on one home, each ending with a rerun to completion:
fresh builds and updates (files deleted, changed and added since the last complete
build), parsing in a thread and in the process pool. After every kill a copy of the
home is opened as a user would (`KnowledgeBase.open` + search), and checked: SQLite
integrity, FAISS ids == catalog ids, no duplicate chunk, and every file the catalog
lists holds exactly the chunks a clean build gives that version of the file. After
each rerun: chunk ids, manifest, FAISS count and search results equal a clean build's.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
from reliability_tools import record

pytestmark = [pytest.mark.reliability,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forkserver + /proc: Linux only")]

KILLS = 50
KILLS_PER_SEQUENCE = 5
PAUSE_S = 0.005
"""How long the child lingers at each reported stage (so a kill aimed at it lands in it)."""
SPLITTER = {"chunk_size": 120, "chunk_overlap": 20}
QUERIES = ("topic 7 details", "maintenance schedule valve", "document 15 summary", "pressure limits")
WORK_STAGES = ("parse", "encode", "commit-added", "commit-updated", "committed", "remove")
END_STAGES = ("faiss-save", "manifest-write")
# (parse mode, corpus change) of each sequence; workers > 0 parse in the process pool.
SEQUENCES: tuple[tuple[int, str], ...] = (
    (0, "fresh"), (0, "update"), (2, "fresh"), (1, "update"), (0, "fresh"),
    (0, "update"), (0, "fresh"), (2, "update"), (0, "update"), (0, "fresh"),
)


# -- corpus --------------------------------------------------------------------------------
_WORDS = ("valve pressure pump filter schedule maintenance sensor limit manual chapter install "
          "configure network backup restore error warning calibrate motor belt torque").split()


def _text(i: int, version: int) -> str:
    rng = random.Random(i * 100 + version)
    parts = [f"Document {i} version {version} covers topic {i}."]
    for s in range(6 + i % 5):
        words = " ".join(rng.choice(_WORDS) for _ in range(8))
        parts.append(f"Section {s} of document {i}: {words}. It has details number {i * 10 + s}.")
    if i % 4 == 0:  # some files have pages (form feeds)
        parts.insert(3, "\f")
    return " ".join(parts)


def _write_corpus(folder: Path, version: int) -> None:
    """v1: d00..d15. v2: d00-d01 deleted, d02-d04 changed, d16-d17 added, the rest unchanged."""
    folder.mkdir(parents=True, exist_ok=True)
    if version == 1:
        for i in range(16):
            (folder / f"d{i:02d}.txt").write_text(_text(i, 1), encoding="utf-8")
        return
    for i in range(2):
        (folder / f"d{i:02d}.txt").unlink(missing_ok=True)
    for i in range(2, 5):
        (folder / f"d{i:02d}.txt").write_text(_text(i, 2), encoding="utf-8")
    for i in range(16, 18):
        (folder / f"d{i:02d}.txt").write_text(_text(i, 1), encoding="utf-8")


# -- the child: one instrumented indexing run ------------------------------------------------------
def _slow_prepare_in_worker(job: Any) -> Any:
    """Pool-side parse, slowed like the thread's (patched in by the child; runs in a spawned worker)."""
    import kbqa.index as ix

    time.sleep(PAUSE_S)
    return ix.prepare_file(ix._WORKER_TOOLS[0], *job)


def _child(home: str, workers: int, conn: Connection) -> None:
    import kbqa.index as ix
    from kbqa.config import load_settings
    from kbqa.kb import KnowledgeBase
    from kbqa.store import ChunkStore
    from kbqa.store.catalog import Catalog
    from kbqa.testing import FakeEmbeddings

    ix.WAVE_CHUNKS = 6
    ix.ENCODE_CHUNKS = 3
    ix._prepare_in_worker = _slow_prepare_in_worker
    label = ["start"]

    def emit(stage: str) -> None:
        conn.send(stage)
        time.sleep(PAUSE_S)

    real_prepare_all, real_prepare_file = ix.Indexer._prepare_all, ix.prepare_file

    def prepare_all(self: Any, *args: Any) -> Any:
        for item in real_prepare_all(self, *args):
            emit("parse")
            yield item

    def prepare_file(*args: Any) -> Any:
        time.sleep(PAUSE_S)
        return real_prepare_file(*args)

    real_commit = ChunkStore.commit

    def commit(self: Any, writes: Any, removed: Any = ()) -> None:
        known = self.catalog.files()
        label[0] = ("remove" if not writes else
                    "commit-updated" if any(w.record.file in known for w in writes) else "commit-added")
        real_commit(self, writes, removed)
        emit("committed")

    real_set_meta = Catalog.set_meta

    def set_meta(self: Any, key: str, value: str) -> None:
        real_set_meta(self, key, value)
        if key == "generation":  # the last statement inside the commit's transaction
            emit(label[0])

    real_replace = os.replace

    def replace(src: Any, dst: Any, **kw: Any) -> None:
        name = os.fspath(dst)
        if name.endswith(".faiss"):
            emit("faiss-save")
        elif name.endswith("manifest.json"):
            emit("manifest-write")
        real_replace(src, dst, **kw)

    class SlowEmbeddings(FakeEmbeddings):
        def encode(self, texts: list[str], batch_size: int | None = None) -> Any:
            emit("encode")
            return super().encode(texts, batch_size)

    ix.Indexer._prepare_all = prepare_all  # type: ignore[method-assign]
    ix.prepare_file = prepare_file
    ChunkStore.commit = commit  # type: ignore[method-assign]
    Catalog.set_meta = set_meta  # type: ignore[method-assign]
    os.replace = replace
    settings = load_settings(home=Path(home), splitter=SPLITTER, loaders={"workers": workers})
    kb = KnowledgeBase.create("k", settings, exist_ok=True, embeddings=SlowEmbeddings())
    kb.sync()
    kb.close()
    conn.send("done")


@dataclass
class Run:
    finished: bool
    seconds: float
    stages: Counter[str] = field(default_factory=Counter)
    last: str = ""
    children: list[int] = field(default_factory=list)
    """Processes of the killed child (parser workers) still alive 20 s after the kill."""


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            out.extend(int(c) for c in task.read_text().split())
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _run(ctx: Any, home: Path, workers: int, kill: tuple[str, int] | float | None) -> Run:
    """Index `home` in a child; kill -9 it at the n-th `stage` event, or after `kill` seconds."""
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(str(home), workers, send))
    started = time.perf_counter()
    proc.start()
    send.close()
    run = Run(False, 0.0)
    deadline = started + kill if isinstance(kill, float) else None
    try:
        while True:
            timeout = 60.0 if deadline is None else max(0.0, deadline - time.perf_counter())
            if not recv.poll(timeout):
                if deadline is not None:
                    break  # random time reached: kill now
                raise AssertionError(f"indexing child silent for 60 s (exit code {proc.exitcode})")
            try:
                event = recv.recv()
            except EOFError:
                proc.join(30)
                raise AssertionError(f"indexing child died on its own (exit code {proc.exitcode})") from None
            if event == "done":
                run.finished = True
                break
            run.stages[event] += 1
            run.last = event
            if isinstance(kill, tuple) and event == kill[0] and run.stages[event] == kill[1]:
                break
    finally:
        if not run.finished and proc.pid is not None:
            run.children = _children(proc.pid)
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        recv.close()
    run.seconds = time.perf_counter() - started
    gone_by = time.perf_counter() + 20.0  # a worker still importing exits once its initializer runs
    while run.children and time.perf_counter() < gone_by:  # pool workers must follow their parent
        run.children = [p for p in run.children if _alive(p)]
        time.sleep(0.05)
    if run.finished:
        assert proc.exitcode == 0, proc.exitcode
    return run


# -- inspection ------------------------------------------------------------------------------------
@dataclass
class State:
    opened: bool
    problems: list[str]
    files: dict[str, str]  # file -> sha256 of the catalog's record
    by_file: dict[str, list[str]]
    ids: list[str]
    faiss: int
    search: list[list[tuple[str, float]]]
    manifest: dict[str, Any] | None


def _inspect(home: Path, scratch: Path) -> State:
    """Open a copy of `home`'s index as a user would after the crash (the original stays as the kill left it)."""
    from kbqa.config import load_settings
    from kbqa.kb import KnowledgeBase
    from kbqa.testing import FakeEmbeddings

    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(home, scratch)
    problems: list[str] = []
    index_dir = scratch / "vector_store" / "k"
    manifest = None
    if (index_dir / "manifest.json").exists():
        try:
            manifest = json.loads((index_dir / "manifest.json").read_text(encoding="utf-8"))
        except ValueError as exc:
            problems.append(f"manifest.json unreadable: {exc}")
    settings = load_settings(home=scratch, splitter=SPLITTER)
    try:
        kb = KnowledgeBase.open("k", settings, embeddings=FakeEmbeddings())
        catalog = kb.store.catalog
        integrity = catalog._db.execute("PRAGMA integrity_check").fetchone()[0]
        if integrity != "ok":
            problems.append(f"integrity_check: {integrity}")
        by_file = catalog.chunk_ids_by_file()
        ids = sorted(c for cs in by_file.values() for c in cs)
        int_ids = {r[0] for r in catalog._db.execute("SELECT int_id FROM chunks")}
        vec = kb.store.vectors
        faiss_ids = set(_faiss_ids(vec))
        if faiss_ids != int_ids or kb.store.count() != len(int_ids):
            problems.append(f"FAISS holds {kb.store.count()} vectors, catalog {len(int_ids)} chunks")
        files = {name: rec.sha256 for name, rec in kb.store.files().items()}
        for name, rec in kb.store.files().items():
            if rec.status != "failed" and rec.n_chunks != len(by_file.get(name, [])):
                problems.append(f"{name}: record says {rec.n_chunks} chunks, catalog has {len(by_file.get(name, []))}")
        orphans = set(by_file) - set(files)
        if orphans:
            problems.append(f"chunks of files without a record: {sorted(orphans)}")
        search = [[(s.chunk_id, round(s.score, 3)) for s in kb.search(q)] for q in QUERIES]
        kb.close()
    except Exception as exc:  # any failure to open or search is what this test counts
        return State(False, [*problems, f"{type(exc).__name__}: {exc}"], {}, {}, [], 0, [], manifest)
    return State(True, problems, files, by_file, ids, len(faiss_ids), search, manifest)


def _faiss_ids(vec: Any) -> list[int]:
    import faiss
    import numpy as np

    index = vec._buffer if vec._buffer is not None else vec.index
    n = int(index.id_map.size())
    ids = faiss.rev_swig_ptr(index.id_map.data(), n).copy() if n else np.zeros(0, dtype=np.int64)
    if getattr(vec, "_dead", None):
        ids = np.delete(ids, sorted(vec._dead))
    return [int(i) for i in ids]


def _manifest_matches(state: State) -> bool:
    m = state.manifest
    return bool(m) and {f: v["chunks"] for f, v in m["files"].items()} == {  # type: ignore[index]
        f: state.by_file.get(f, []) for f in state.files
    }


# -- the test --------------------------------------------------------------------------------------
def test_50_random_kill_points(tmp_path: Path) -> None:
    started = time.perf_counter()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["kbqa.kb", "kbqa.testing", "faiss", "numpy"])
    scratch = tmp_path / "scratch"

    # Clean references: v1 and v2 from scratch (thread), and the same reached by other paths.
    refs: dict[str, State] = {}
    profiles: dict[tuple[int, str], Run] = {}
    for version in (1, 2):
        home = tmp_path / f"clean-v{version}"
        _write_corpus(home / "knowledge/k", 1)
        if version == 2:
            _write_corpus(home / "knowledge/k", 2)
        assert _run(ctx, home, 0, None).finished
        refs[f"v{version}"] = _inspect(home, scratch)
        assert refs[f"v{version}"].opened and not refs[f"v{version}"].problems, refs[f"v{version}"].problems
    expected = {(f, refs[v].files[f]): refs[v].by_file.get(f, []) for v in refs for f in refs[v].files}
    for workers, change in sorted(set(SEQUENCES)):
        home = tmp_path / f"profile-{workers}-{change}"
        _start(home, change, tmp_path / "clean-v1")
        run = _run(ctx, home, workers, None)
        assert run.finished
        profiles[workers, change] = run
        _assert_equal(_inspect(home, scratch), refs["v2" if change == "update" else "v1"], f"clean {change} w{workers}")

    rng = random.Random(int(os.environ.get("KBQA_KILL_SEED", "20261123")))
    counts = Counter[str]()
    landed_in = Counter[str]()
    for seq, (workers, change) in enumerate(SEQUENCES):
        home = tmp_path / f"seq{seq}"
        _start(home, change, tmp_path / "clean-v1")
        profile = profiles[workers, change]
        ref = refs["v2" if change == "update" else "v1"]
        left = Counter(profile.stages)  # the stages a rerun still has ahead (about: a kill loses a wave)
        for j in range(KILLS_PER_SEQUENCE):
            kill: tuple[str, int] | float
            work = [s for s in WORK_STAGES if left[s] > 0]
            if rng.random() < 0.25:
                kill = rng.uniform(0.0, profile.seconds * max(0.1, left.total() / profile.stages.total()))
            else:
                stage = rng.choice(work + list(END_STAGES) if j == KILLS_PER_SEQUENCE - 1 or not work else work)
                kill = (stage, rng.randint(1, max(1, left[stage])))
            run = _run(ctx, home, workers, kill)
            counts["kill points"] += 1
            counts["orphaned workers"] += len(run.children)
            if run.finished:
                landed_in["(finished first)"] += 1
            else:
                counts["landed while running"] += 1
                landed_in[run.last or "start-up"] += 1
                for stage in WORK_STAGES:
                    left[stage] = max(0, left[stage] - run.stages[stage])
            state = _inspect(home, scratch)
            if not state.opened or state.problems:
                counts["corrupt indexes"] += 1
            for f, sha in state.files.items():
                want = expected.get((f, sha))
                have = state.by_file.get(f, [])
                if want is None:
                    counts["unexpected files"] += 1
                    continue
                counts["lost chunks"] += len(set(want) - set(have))
                counts["duplicate chunks"] += len(have) - len(set(have)) + len(set(have) - set(want))
            assert state.opened and not state.problems, (seq, kill, state.problems)
        final = _run(ctx, home, workers, None)
        assert final.finished
        state = _inspect(home, scratch)
        counts["reruns"] += 1
        counts["lost chunks"] += len(set(ref.ids) - set(state.ids))
        counts["duplicate chunks"] += len(state.ids) - len(set(state.ids)) + len(set(state.ids) - set(ref.ids))
        _assert_equal(state, ref, f"sequence {seq} ({change}, workers={workers})")

    summary = {
        "kill points": counts["kill points"],
        "landed while running": counts["landed while running"],
        "corrupt indexes": counts["corrupt indexes"],
        "lost chunks": counts["lost chunks"],
        "duplicate chunks": counts["duplicate chunks"],
        "orphaned workers": counts["orphaned workers"],
        "reruns equal to a clean build": counts["reruns"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    record("kill -9 during indexing", **{k: int(v) for k, v in summary.items()})
    print("\nkill -9 reliability:", json.dumps(summary))
    print("kills by stage reached:", json.dumps(dict(sorted(landed_in.items()))))
    assert counts["kill points"] == KILLS
    assert counts["corrupt indexes"] == counts["lost chunks"] == counts["duplicate chunks"] == 0
    assert counts["unexpected files"] == counts["orphaned workers"] == 0
    assert counts["landed while running"] >= KILLS * 0.8, landed_in  # the kills really hit running builds
    assert len(landed_in) >= 6, landed_in  # and in many different stages


def _start(home: Path, change: str, clean_v1: Path) -> None:
    """A fresh home with corpus v1, or a copy of the complete v1 build whose folder then changes to v2."""
    shutil.rmtree(home, ignore_errors=True)
    if change == "fresh":
        _write_corpus(home / "knowledge/k", 1)
        return
    shutil.copytree(clean_v1, home)
    _write_corpus(home / "knowledge/k", 2)


def _assert_equal(state: State, ref: State, what: str) -> None:
    assert state.opened and not state.problems, (what, state.problems)
    assert state.by_file == ref.by_file, what
    assert state.files == ref.files, what
    assert state.faiss == len(ref.ids), what
    assert state.search == ref.search, what
    assert _manifest_matches(state), f"{what}: manifest.json differs from the catalog"
