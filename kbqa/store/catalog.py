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
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kbqa.errors import IndexCorruptError
from kbqa.schema import Chunk

KEYWORD_BUDGET = 5_000
"""Postings one keyword search scores at most (see `Catalog.keyword_search`): ~10-25 ms."""
_ID_SPACE = 1 << 63  # chunk int ids are 63-bit content hashes (kbqa.splitter.chunk_id)
_TERM_DF_VERSION = "1"  # meta key "term_df": the term_df table is complete for this catalog

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
CREATE TABLE IF NOT EXISTS term_df(term TEXT PRIMARY KEY, df INTEGER NOT NULL) WITHOUT ROWID;
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
            if self.get_meta("term_df") != _TERM_DF_VERSION:
                self._build_term_df()
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(f"{path}: cannot open the index database ({exc})") from exc

    def _build_term_df(self) -> None:
        """Count every term's chunks once (catalogs written before `term_df` existed)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            counts: Counter[str] = Counter()
            for (terms,) in db.execute("SELECT terms FROM chunks_fts"):
                counts.update(set(terms.split()))
            db.execute("DELETE FROM term_df")
            db.executemany("INSERT INTO term_df(term, df) VALUES(?, ?)", counts.items())
            self.set_meta("term_df", _TERM_DF_VERSION)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

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
        delta: Counter[str] = Counter()  # change of each term's chunk count
        db.execute("BEGIN IMMEDIATE")
        try:
            for file in [*removed, *(w.record.file for w in writes)]:
                for int_id, terms in db.execute(
                    "SELECT c.int_id, f.terms FROM chunks c JOIN chunks_fts f ON f.rowid = c.int_id WHERE c.file=?",
                    (file,),
                ):
                    old_ids.append(int_id)
                    delta.subtract(set(terms.split()))
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
                for t in w.terms:
                    delta.update(set(t.split()))
            db.executemany(
                "INSERT INTO term_df(term, df) VALUES(?, ?) ON CONFLICT(term) DO UPDATE SET df = df + excluded.df",
                [(t, d) for t, d in delta.items() if d],
            )
            if any(d < 0 for d in delta.values()):
                db.execute("DELETE FROM term_df WHERE df <= 0")
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

    def keyword_search(self, terms: Sequence[str], n: int, doc_freqs: dict[str, int] | None = None
                       ) -> list[tuple[int, float]]:
        """BM25 top-n over FTS5 for any of the terms; returns (int_id, bm25 > 0 = better).

        FTS5 scores every row that matches (2-5 µs per posting here), so an OR of common
        terms costs time linear in the store's size: 0.75 s p95 at 1M chunks. The work is
        bounded by `KEYWORD_BUDGET` postings instead: terms are taken rarest first while their
        document frequencies fit the budget; the common terms left out are the ones BM25
        weighs least, and the retriever still scores every candidate on all the query's
        terms. When even the rarest term matches more rows than the budget, a uniform slice
        of its postings is scored (int ids are hashes, so `rowid < x` is a random sample).
        Small stores (sum of the query terms' frequencies ≤ budget) get the exact search.
        On the dev set, a budget cut to 150 postings (4 % of the 3,505-chunk KB, far tighter
        than 5,000 is for 1M chunks) left hybrid hit@5 unchanged and MRR within ±0.003.
        """
        if not terms:
            return []
        df = self.doc_freqs(terms) if doc_freqs is None else doc_freqs
        present = sorted((t for t in dict.fromkeys(terms) if df.get(t, 0) > 0), key=lambda t: (df[t], t))
        chosen: list[str] = []
        total = 0
        for term in present:
            if chosen and total + df[term] > KEYWORD_BUDGET:
                break
            chosen.append(term)
            total += df[term]
        if not chosen:
            return []
        query = " OR ".join('"' + t.replace('"', '""') + '"' for t in chosen)
        sql = "SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ?"
        params: list[object] = [query]
        if total > KEYWORD_BUDGET:
            sql += " AND rowid < ?"
            params.append(int(_ID_SPACE * KEYWORD_BUDGET / total))
        rows = self._db.execute(sql + " ORDER BY bm25(chunks_fts) LIMIT ?", (*params, n))
        return [(r[0], -float(r[1])) for r in rows]

    def doc_freqs(self, terms: Sequence[str]) -> dict[str, int]:
        if not terms:
            return {}
        marks = ",".join("?" * len(terms))
        # Our own counts, kept by `commit`: fts5vocab would walk each term's whole posting
        # list (37 ms per query at 1M chunks).
        rows = self._db.execute(f"SELECT term, df FROM term_df WHERE term IN ({marks})", list(terms))
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
