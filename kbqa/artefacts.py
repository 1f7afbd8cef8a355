"""Derived artefacts in the model cache: files kbqa makes once from installed packages, so that a
fresh process can open them cheaply (mmap'd weights, lookup tables) instead of rebuilding them.

Each artefact is a folder ``<models_dir>/<name>-<key>/`` (``KBQA_MODELS_DIR``, default
``~/.cache/kbqa/models``). The key hashes the format version and the sources it was made from
(size plus first and last MiB of each file), so a changed package or format makes a new folder
and an old one is never read by mistake. A folder is filled under a temporary name and renamed
into place: a build that dies half-way leaves only a ``.tmp-*`` sibling, which no lookup takes
and a later build removes; two processes building at once both succeed (the loser's copy is
dropped).

Lookup tables are SQLite files (stdlib, mmap'd by SQLite itself, queried for a handful of keys).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from kbqa.errors import KbqaError
from kbqa.models.assemble import models_dir

_EDGE = 1 << 20
_STALE_TEMP_S = 3600.0
_SQL_BATCH = 900


def source_key(paths: Iterable[Path], *extra: object) -> str:
    """16 hex digits identifying `paths` (size, first and last MiB) and `extra` (versions, formats)."""
    h = hashlib.sha256(repr(extra).encode())
    for path in paths:
        size = path.stat().st_size
        h.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as fh:
            h.update(fh.read(_EDGE))
            if size > _EDGE:
                fh.seek(max(_EDGE, size - _EDGE))
                h.update(fh.read(_EDGE))
    return h.hexdigest()[:16]


def ensure_artefact(name: str, key: str, fill: Callable[[Path], None], *, marker: str,
                    root: Path | None = None, error: type[KbqaError] = KbqaError) -> Path:
    """The folder ``<root>/<name>-<key>``, made with `fill(empty_folder)` if it is not there yet.

    `marker` is the file `fill` writes last; its presence is what makes a folder complete.
    Errors from the file system become `error` naming the folder.
    """
    root = root if root is not None else models_dir()
    final = root / f"{name}-{key}"
    if (final / marker).is_file():
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(root, name)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
    except OSError as exc:
        raise error(f"cannot write the model cache {root}: {exc} (set KBQA_MODELS_DIR to a writable folder)") \
            from exc
    try:
        fill(tmp)
        if not (tmp / marker).is_file():
            raise error(f"building {final.name} wrote no {marker}")
        tmp.chmod(0o755)  # mkdtemp makes it 0700
        try:
            os.replace(tmp, final)
        except OSError as exc:
            if not (final / marker).is_file():  # not a lost race with another process: a real error
                raise error(f"cannot move {tmp} to {final}: {exc}") from exc
    except OSError as exc:
        raise error(f"cannot build {final}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _remove_stale_temps(root: Path, name: str) -> None:
    now = time.time()
    for path in root.glob(f".tmp-{name}-*"):
        try:
            if now - path.stat().st_mtime > _STALE_TEMP_S:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def write_table(path: Path, rows: Iterable[tuple[str, int, float]]) -> None:
    """A read-only lookup table `key -> (int, float)` as a SQLite file (keys unique)."""
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("CREATE TABLE t (k TEXT PRIMARY KEY, i INTEGER NOT NULL, f REAL NOT NULL) WITHOUT ROWID")
        con.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
        con.commit()
    finally:
        con.close()


class LookupTable:
    """A table written by `write_table`, opened read-only; `get` fetches only the keys asked for."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True,
                                        check_same_thread=False)
        except sqlite3.Error as exc:
            raise KbqaError(f"{path}: cannot open the lookup table: {exc}") from exc

    def get(self, keys: Iterable[str]) -> dict[str, tuple[int, float]]:
        wanted = list(dict.fromkeys(keys))
        out: dict[str, tuple[int, float]] = {}
        try:
            for start in range(0, len(wanted), _SQL_BATCH):
                part = wanted[start:start + _SQL_BATCH]
                marks = ",".join("?" * len(part))
                for k, i, f in self._con.execute(f"SELECT k, i, f FROM t WHERE k IN ({marks})", part):
                    out[k] = (int(i), float(f))
        except sqlite3.Error as exc:
            raise KbqaError(f"{self.path}: unreadable lookup table: {exc}") from exc
        return out

    def close(self) -> None:
        self._con.close()
