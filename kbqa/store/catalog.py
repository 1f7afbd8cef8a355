"""SQLite half of the store: chunk text + metadata + vectors, file records, FTS5 keywords.

SQLite is the source of truth. Its transactions make every commit atomic, so a crash
or kill -9 leaves the last committed state; the FAISS file is a derived cache that is
rebuilt from the `vec` column whenever it is older than the catalog (see `generation`).
No pickle anywhere: vectors are raw float32 bytes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kbqa.errors import IndexCorruptError
from kbqa.schema import Chunk

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files(
    file TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL, mtime REAL NOT NULL,
    origin TEXT, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', warnings TEXT NOT NULL DEFAULT '[]',
    n_chunks INTEGER NOT NULL DEFAULT 0, split_key TEXT NOT NULL DEFAULT '', indexed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks(
    int_id INTEGER PRIMARY KEY, id TEXT NOT NULL, file TEXT NOT NULL, path TEXT NOT NULL,
    page INTEGER, heading TEXT NOT NULL, start INTEGER NOT NULL, text TEXT NOT NULL,
    text_key TEXT NOT NULL, vec BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_file ON chunks(file);
CREATE INDEX IF NOT EXISTS chunks_text_key ON chunks(text_key);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(terms, tokenize='unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_vocab USING fts5vocab(chunks_fts, 'row');
"""


@dataclass(slots=True)
class FileRecord:
    """What the catalog remembers of one source file (indexed or failed)."""

    file: str
    sha256: str
    size: int
    mtime: float
    status: str = "ok"  # "ok" | "failed"
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    n_chunks: int = 0
    origin: str | None = None
    split_key: str = ""
    indexed_at: float = 0.0


@dataclass(slots=True)
class ChunkRow:
    chunk: Chunk
    terms: str = ""


@dataclass(slots=True)
class FileWrite:
    """One file's new state for `Catalog.commit`: its record, chunks, their vectors and terms."""

    record: FileRecord
    chunks: Sequence[Chunk] = ()
    vectors: np.ndarray | None = None
    terms: Sequence[str] = ()
    text_keys: Sequence[str] = ()


class Catalog:
    """The SQLite file `catalog.sqlite` of one knowledge base."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(f"{path}: cannot open the index database ({exc})") from exc

    def close(self) -> None:
        self._db.close()

    # -- meta -------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    # -- files ------------------------------------------------------------
    def files(self) -> dict[str, FileRecord]:
        rows = self._db.execute(
            "SELECT file, sha256, size, mtime, status, reason, warnings, n_chunks, origin, split_key, indexed_at"
            " FROM files ORDER BY file"
        )
        return {
            r[0]: FileRecord(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8], r[9], r[10])
            for r in rows
        }

    def chunk_ids_by_file(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for file, cid in self._db.execute("SELECT file, id FROM chunks ORDER BY file, page, start"):
            out.setdefault(file, []).append(cid)
        return out

    # -- writing ------------------------------------------------------------
    def commit(self, writes: Sequence[FileWrite], removed: Iterable[str] = ()) -> list[int]:
        """Replace the given files' chunks and drop removed files, in one transaction.

        Returns the int ids of the chunks that were replaced or removed (for the vector index).
        """
        db = self._db
        old_ids: list[int] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for file in [*removed, *(w.record.file for w in writes)]:
                old_ids.extend(r[0] for r in db.execute("SELECT int_id FROM chunks WHERE file=?", (file,)))
                db.execute(
                    "DELETE FROM chunks_fts WHERE rowid IN (SELECT int_id FROM chunks WHERE file=?)", (file,)
                )
                db.execute("DELETE FROM chunks WHERE file=?", (file,))
                db.execute("DELETE FROM files WHERE file=?", (file,))
            now = time.time()
            for w in writes:
                r = w.record
                db.execute(
                    "INSERT INTO files(file, sha256, size, mtime, origin, status, reason, warnings, n_chunks,"
                    " split_key, indexed_at) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                    (r.file, r.sha256, r.size, r.mtime, r.origin, r.status, r.reason,
                     json.dumps(r.warnings, ensure_ascii=False), len(w.chunks), r.split_key, now),
                )
                if not w.chunks:
                    continue
                assert w.vectors is not None and len(w.vectors) == len(w.chunks) == len(w.terms)
                vecs = np.ascontiguousarray(w.vectors, dtype=np.float32)
                db.executemany(
                    "INSERT INTO chunks(int_id, id, file, path, page, heading, start, text, text_key, vec)"
                    " VALUES(?,?,?,?,?,?,?,?,?,?)",
                    [
                        (c.int_id, c.id, c.file, c.path, c.page, c.heading, c.start, c.text, key, vec.tobytes())
                        for c, key, vec in zip(w.chunks, w.text_keys, vecs, strict=True)
                    ],
                )
                db.executemany(
                    "INSERT INTO chunks_fts(rowid, terms) VALUES(?, ?)",
                    [(c.int_id, t) for c, t in zip(w.chunks, w.terms, strict=True)],
                )
            self.set_meta("generation", str(self.generation + 1))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return old_ids

    # -- reading ------------------------------------------------------------
    def vectors_for_keys(self, keys: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        """Stored vectors for chunk texts already embedded (by text key), to skip re-encoding."""
        out: dict[str, np.ndarray] = {}
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            marks = ",".join("?" * len(part))
            for key, blob in self._db.execute(
                f"SELECT text_key, vec FROM chunks WHERE text_key IN ({marks})", part
            ):
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.shape[0] == dim:
                    out[key] = vec
        return out

    def iter_vectors(self, batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All (int ids, vectors) in batches, for rebuilding the FAISS index."""
        cur = self._db.execute("SELECT int_id, vec FROM chunks")
        while rows := cur.fetchmany(batch):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
            yield ids, vecs

    def vectors(self, int_ids: Sequence[int]) -> dict[int, np.ndarray]:
        marks = ",".join("?" * len(int_ids))
        rows = self._db.execute(f"SELECT int_id, vec FROM chunks WHERE int_id IN ({marks})", list(int_ids))
        return {r[0]: np.frombuffer(r[1], dtype=np.float32) for r in rows}

    def chunks(self, int_ids: Sequence[int]) -> dict[int, ChunkRow]:
        if not int_ids:
            return {}
        marks = ",".join("?" * len(int_ids))
        rows = self._db.execute(
            "SELECT c.int_id, c.id, c.text, c.file, c.path, c.page, c.heading, c.start, f.terms"
            f" FROM chunks c JOIN chunks_fts f ON f.rowid = c.int_id WHERE c.int_id IN ({marks})",
            list(int_ids),
        )
        return {r[0]: ChunkRow(Chunk(r[1], r[0], r[2], r[3], r[4], r[5], r[6], r[7]), r[8]) for r in rows}

    def keyword_search(self, terms: Sequence[str], n: int) -> list[tuple[int, float]]:
        """BM25 top-n over FTS5 for any of the terms; returns (int_id, bm25 > 0 = better)."""
        if not terms:
            return []
        query = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        rows = self._db.execute(
            "SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts)"
            " LIMIT ?",
            (query, n),
        )
        return [(r[0], -float(r[1])) for r in rows]

    def doc_freqs(self, terms: Sequence[str]) -> dict[str, int]:
        if not terms:
            return {}
        marks = ",".join("?" * len(terms))
        rows = self._db.execute(f"SELECT term, doc FROM chunks_vocab WHERE term IN ({marks})", list(terms))
        return {r[0]: int(r[1]) for r in rows}

    def has_phrase(self, terms: Sequence[str]) -> bool:
        """Whether some chunk holds these terms next to each other, in this order."""
        if not terms:
            return False
        phrase = '"' + " ".join(t.replace('"', '""') for t in terms) + '"'
        row = self._db.execute("SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT 1", (phrase,)).fetchone()
        return row is not None

    def count_chunks(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM chunks").fetchone()[0])
