"""Helpers of the reliability suite (imported by its tests and conftest.py): run-wide counters,
file-tree snapshots (to prove nothing was written where it should not be), an index integrity
check, and settings/environment with the fake models.
"""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kbqa.config import Settings, load_settings

COUNTS: dict[str, Counter[str]] = {}
"""section → counters; conftest.py prints them after the run."""


def record(section: str, **counts: int) -> None:
    """Add to the counters of `section` (keys keep the order of their first use)."""
    bucket = COUNTS.setdefault(section, Counter())
    for key, n in counts.items():
        bucket[key] += n


def record_max(section: str, **values: int) -> None:
    """Keep the largest value seen for each key of `section` (e.g. the slowest response)."""
    bucket = COUNTS.setdefault(section, Counter())
    for key, n in values.items():
        bucket[key] = max(bucket[key], n)


# -- settings ---------------------------------------------------------------------------


def fake_settings(home: Path, **overrides: Any) -> Settings:
    """Settings under `home` with the hashing embeddings and the fake LLM (no weights, no downloads)."""
    base: dict[str, Any] = {
        "home": home,
        "splitter": {"chunk_size": 200, "chunk_overlap": 30},
        "embedding": {"model": "fake"},
        "llm": {"backend": "fake"},
    }
    base.update(overrides)
    return load_settings(**base)


def fake_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a `kbqa` subprocess using `home` and the fake models."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBQA_")}
    env.update(KBQA_HOME=str(home), KBQA_EMBEDDING__MODEL="fake", KBQA_LLM__BACKEND="fake",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    return env


# -- file-tree snapshots ----------------------------------------------------------------

Snapshot = dict[str, tuple[str, int, int]]
"""relative path → (kind, size, mtime_ns); kind is 'file', 'dir', 'link' or 'other'."""


def snapshot(root: Path, skip: Iterable[Path] = ()) -> Snapshot:
    """Everything under `root` (symlinks not followed), except the subtrees in `skip`."""
    root = Path(root)
    skipped = {os.path.abspath(p) for p in skip}
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if os.path.abspath(os.path.join(dirpath, d)) not in skipped]
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            if os.path.abspath(full) in skipped:
                continue
            st = os.lstat(full)
            kind = ("link" if stat.S_ISLNK(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode)
                    else "file" if stat.S_ISREG(st.st_mode) else "other")
            out[os.path.relpath(full, root)] = (kind, 0 if kind == "dir" else st.st_size,
                                                 0 if kind == "dir" else st.st_mtime_ns)
    return out


def changes(before: Snapshot, after: Snapshot) -> list[str]:
    """Paths added, removed or modified between two snapshots ('+path', '-path', '~path')."""
    added = [f"+{p}" for p in after if p not in before]
    removed = [f"-{p}" for p in before if p not in after]
    changed = [f"~{p}" for p in before if p in after and before[p] != after[p]]
    return sorted(added + removed + changed)


# -- index integrity --------------------------------------------------------------------


def index_problems(kb: Any) -> list[str]:
    """What is inconsistent in an index on disk (empty list = sound).

    Checks that the FAISS index and the SQLite catalog hold the same number of chunks, that every
    indexed file's chunk count matches its chunks, and that manifest.json parses and lists the files.
    """
    problems: list[str] = []
    store = kb.store
    files = store.files()
    in_catalog = store.catalog.count_chunks()
    if store.count() != in_catalog:
        problems.append(f"FAISS holds {store.count()} vectors but the catalog {in_catalog} chunks")
    per_file = store.catalog.chunk_ids_by_file()
    for name, rec in files.items():
        have = len(per_file.get(name, []))
        if rec.status != "failed" and have != rec.n_chunks:
            problems.append(f"{name}: catalog says {rec.n_chunks} chunks, {have} stored")
    manifest = kb.index_dir / "manifest.json"
    try:
        listed = set(json.loads(manifest.read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError) as exc:
        problems.append(f"manifest.json unreadable ({type(exc).__name__}: {exc})")
    else:
        if listed != set(files):
            problems.append(f"manifest lists {sorted(listed ^ set(files))} differently from the catalog")
    return problems
