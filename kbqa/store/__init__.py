"""The index of one knowledge base: `vector_store/<kb>/` = catalog.sqlite + vectors.faiss + manifest.json.

`ChunkStore` ties the SQLite catalog (truth) and the FAISS index (derived) together,
checks the fingerprint on open and writes `manifest.json` for humans and tools.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kbqa.errors import IndexCorruptError, IndexMismatchError
from kbqa.store.catalog import Catalog, ChunkRow, FileRecord, FileWrite
from kbqa.store.vectors import VectorIndex

FORMAT_VERSION = 1
CATALOG_FILE = "catalog.sqlite"
VECTORS_FILE = "vectors.faiss"
MANIFEST_FILE = "manifest.json"

__all__ = ["FORMAT_VERSION", "ChunkRow", "ChunkStore", "FileRecord", "FileWrite", "write_json_atomic"]


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class ChunkStore:
    """Open (or create) the index in `directory` for vectors described by `fingerprint`.

    `fingerprint` must hold at least `embedding: {model_id, dimension, normalized}`;
    opening an index built with another embedding raises `IndexMismatchError` whose
    message names `rebuild_hint`.
    """

    def __init__(
        self,
        directory: Path,
        fingerprint: dict[str, Any],
        faiss_factory: str = "Flat",
        rebuild_hint: str = "kbqa index --rebuild",
    ) -> None:
        self.directory = directory
        self.fingerprint = fingerprint
        self.dimension = int(fingerprint["embedding"]["dimension"])
        directory.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(directory / CATALOG_FILE)
        self._check_fingerprint(rebuild_hint)
        self.vectors = self._load_vectors(faiss_factory)

    def _check_fingerprint(self, rebuild_hint: str) -> None:
        stored_raw = self.catalog.get_meta("fingerprint")
        if stored_raw is None:
            self.catalog.set_meta("fingerprint", json.dumps(self.fingerprint, sort_keys=True))
            self.catalog.set_meta("format_version", str(FORMAT_VERSION))
            return
        stored = json.loads(stored_raw)
        version = int(self.catalog.get_meta("format_version") or 0)
        if version != FORMAT_VERSION:
            raise IndexMismatchError(
                f"{self.directory}: index format {version} is not the supported {FORMAT_VERSION}; "
                f"rebuild it with: {rebuild_hint}"
            )
        have, want = stored.get("embedding", {}), self.fingerprint["embedding"]
        if have != want:
            raise IndexMismatchError(
                f"{self.directory} was built with embedding model {have.get('model_id')!r} "
                f"({have.get('dimension')}-d) but the settings ask for {want.get('model_id')!r} "
                f"({want.get('dimension')}-d). Rebuild the index with: {rebuild_hint}"
            )
        if stored != self.fingerprint:  # splitter or store settings changed: indexer re-splits
            self.catalog.set_meta("fingerprint", json.dumps(self.fingerprint, sort_keys=True))

    def _load_vectors(self, factory: str) -> VectorIndex:
        path = self.directory / VECTORS_FILE
        generation = self.catalog.generation
        loaded = VectorIndex.load(path, self.dimension, factory)
        if loaded is not None and loaded.generation == generation:
            return loaded
        # Missing, unreadable or stale: the catalog holds every vector, rebuild from it.
        index = VectorIndex(self.dimension, factory)
        for ids, vecs in self.catalog.iter_vectors():
            if vecs.shape[1] != self.dimension:
                raise IndexCorruptError(f"{self.directory}: stored vectors are {vecs.shape[1]}-d, expected "
                                        f"{self.dimension}-d")
            index.add(ids, vecs)
        if generation:
            index.save(path, generation)
        return index

    # -- writes ------------------------------------------------------------------
    def commit(self, writes: Sequence[FileWrite], removed: Sequence[str] = ()) -> None:
        """Atomically replace files' chunks (and drop removed files) in both indexes."""
        old_ids = self.catalog.commit(writes, removed)
        self.vectors.remove(old_ids)
        for w in writes:
            if w.chunks:
                assert w.vectors is not None
                self.vectors.add(np.fromiter((c.int_id for c in w.chunks), dtype=np.int64), w.vectors)

    def flush(self) -> None:
        """Persist the FAISS index and the manifest for the catalog's current generation."""
        generation = self.catalog.generation
        if self.vectors.generation != generation:
            self.vectors.save(self.directory / VECTORS_FILE, generation)
        self.write_manifest()

    def write_manifest(self) -> None:
        ids = self.catalog.chunk_ids_by_file()
        files = {
            name: {
                "sha256": rec.sha256,
                "size": rec.size,
                "status": rec.status,
                **({"reason": rec.reason} if rec.reason else {}),
                "chunks": ids.get(name, []),
            }
            for name, rec in self.catalog.files().items()
        }
        write_json_atomic(
            self.directory / MANIFEST_FILE,
            {
                "format_version": FORMAT_VERSION,
                "generation": self.catalog.generation,
                "fingerprint": self.fingerprint,
                "files": files,
            },
        )

    def close(self) -> None:
        self.catalog.close()

    # -- reads ---------------------------------------------------------------------
    def files(self) -> dict[str, FileRecord]:
        return self.catalog.files()

    def count(self) -> int:
        return self.vectors.size

    def dense_search(self, query: np.ndarray, n: int) -> list[tuple[int, float]]:
        return self.vectors.search(query, n)

    def keyword_search(self, terms: Sequence[str], n: int) -> list[tuple[int, float]]:
        return self.catalog.keyword_search(terms, n)

    def chunks(self, int_ids: Sequence[int]) -> dict[int, ChunkRow]:
        return self.catalog.chunks(int_ids)

    def vectors_of(self, int_ids: Sequence[int]) -> dict[int, np.ndarray]:
        return self.catalog.vectors(int_ids)
