"""The index of one knowledge base: `vector_store/<kb>/` = catalog.sqlite + vectors + manifest.json.

`ChunkStore` ties the SQLite catalog (truth) and a vector backend (derived) together,
checks the fingerprint on open and writes `manifest.json` for humans and tools.

The catalog — chunk text, metadata, the FTS5 keyword index and every vector — is always
local SQLite. The vector backend is FAISS (`vectors.faiss` beside the catalog) or a Milvus
collection (Milvus Lite on disk, or a server): see `kbqa.store.backends`. Which one a
knowledge base uses is recorded in its catalog (meta `vectors`), so it is opened the same
way whatever the current settings say; `store.uri` only decides for new knowledge bases,
and `migrate_vectors` (`kbqa migrate`) moves an existing one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kbqa.errors import IndexCorruptError, IndexMismatchError
from kbqa.store.backends import (
    VectorBackend,
    VectorLocation,
    atomic_write,
    collection_name,
    parse_vector_uri,
    strip_credentials,
)
from kbqa.store.catalog import Catalog, ChunkRow, FileRecord, FileWrite
from kbqa.store.vectors import VectorIndex

FORMAT_VERSION = 1
CATALOG_FILE = "catalog.sqlite"
VECTORS_FILE = "vectors.faiss"
MANIFEST_FILE = "manifest.json"
VECTORS_META = "vectors"  # catalog meta key: the canonical URI of the vector backend

__all__ = [
    "FORMAT_VERSION",
    "ChunkRow",
    "ChunkStore",
    "FileRecord",
    "FileWrite",
    "VectorBackend",
    "drop_outside_vectors",
    "recorded_vectors",
    "write_json_atomic",
]


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON all or nothing (see `atomic_write`)."""
    with atomic_write(path, "w") as fh:
        json.dump(data, fh, ensure_ascii=False, indent=1)


def recorded_vectors(directory: Path) -> str | None:
    """The vector URI an existing index records (None: no index, or built before backends were recorded)."""
    if not (directory / CATALOG_FILE).is_file():
        return None
    catalog = Catalog(directory / CATALOG_FILE)
    try:
        return catalog.get_meta(VECTORS_META)
    finally:
        catalog.close()


def drop_outside_vectors(directory: Path, uri: str, kb_name: str, token: str = "") -> None:
    """Drop an index's Milvus collection when it lives outside the index folder (a server, a shared
    Lite file) and still belongs to this index; vectors inside the folder go with the folder."""
    if not (directory / CATALOG_FILE).is_file():
        return
    catalog = Catalog(directory / CATALOG_FILE)
    try:
        recorded, fingerprint, store_id = (catalog.get_meta(k) for k in (VECTORS_META, "fingerprint", "store_id"))
    finally:
        catalog.close()
    if recorded is None or fingerprint is None or store_id is None:
        return
    location = parse_vector_uri(recorded)
    if location.inside(directory):
        return
    wanted = parse_vector_uri(uri)
    if location.kind == "milvus" and wanted.kind == "milvus" and strip_credentials(wanted.target) == recorded:
        location = wanted
    from kbqa.store.milvus import MilvusVectors

    dimension = int(json.loads(fingerprint)["embedding"]["dimension"])
    collection = collection_name(kb_name, store_id)
    vectors = MilvusVectors(location, directory, collection, dimension, store_id, token)
    try:
        if vectors.owned:
            vectors.drop()
    finally:
        vectors.close()


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
        *,
        vectors: str = "faiss",
        token: str = "",
        collection: str = "",
        milvus_index: str = "FLAT",
    ) -> None:
        """`vectors` is the backend URI for a new index (an existing one keeps the one it records);
        `collection` names the knowledge base in Milvus collection names (default: the folder's name)."""
        self.directory = directory
        self.fingerprint = fingerprint
        self.dimension = int(fingerprint["embedding"]["dimension"])
        self.faiss_factory = faiss_factory
        self.token = token
        self.milvus_index = milvus_index
        directory.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(directory / CATALOG_FILE)
        try:
            self.collection = collection_name(collection or directory.name, self.store_id)
            self._check_fingerprint(rebuild_hint)
            self.location = self._resolve_location(vectors)
            self.vectors: VectorBackend = self._load_vectors(self.location)
        except BaseException:
            self.catalog.close()
            raise

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

    def _resolve_location(self, given: str) -> VectorLocation:
        """The recorded backend (recording `given` for a new index); credentials come from `given` only."""
        wanted = parse_vector_uri(given)
        recorded = self.catalog.get_meta(VECTORS_META)
        if recorded is None:
            self.catalog.set_meta(VECTORS_META, wanted.uri)
            return wanted
        location = parse_vector_uri(recorded)
        if location.kind == "milvus" and wanted.kind == "milvus" and strip_credentials(wanted.target) == recorded:
            return wanted  # same server: keep the user:pass@ given in the settings
        return location

    @property
    def store_id(self) -> str:
        """A random id of this catalog, recorded in Milvus collections to tell whose vectors they hold."""
        sid = self.catalog.get_meta("store_id")
        if sid is None:
            sid = uuid.uuid4().hex
            self.catalog.set_meta("store_id", sid)
        return sid

    def _open_backend(self, location: VectorLocation) -> VectorBackend:
        """The backend at `location` as persisted (possibly stale or empty)."""
        if location.kind == "faiss":
            path = self.directory / VECTORS_FILE
            loaded = VectorIndex.load(path, self.dimension, self.faiss_factory)
            return loaded if loaded is not None else VectorIndex(self.dimension, self.faiss_factory, path)
        from kbqa.store.milvus import MilvusVectors

        return MilvusVectors(location, self.directory, self.collection, self.dimension, self.store_id,
                             self.token, self.milvus_index)

    def _load_vectors(self, location: VectorLocation) -> VectorBackend:
        backend = self._open_backend(location)
        try:
            generation = self.catalog.generation
            if backend.generation != generation:
                self._fill(backend, generation)
                if generation:  # after a crash the manifest is as stale as the vectors were
                    self.write_manifest()
        except BaseException:
            backend.close()
            raise
        return backend

    def _fill(self, backend: VectorBackend, generation: int) -> None:
        """Missing, unreadable or stale: the catalog holds every vector, rebuild from it."""
        backend.reset()
        for ids, vecs in self.catalog.iter_vectors():
            if vecs.shape[1] != self.dimension:
                raise IndexCorruptError(f"{self.directory}: stored vectors are {vecs.shape[1]}-d, expected "
                                        f"{self.dimension}-d")
            backend.add(ids, vecs)
        if generation:
            backend.persist(generation)

    # -- writes ------------------------------------------------------------------
    def commit(self, writes: Sequence[FileWrite], removed: Sequence[str] = ()) -> None:
        """Atomically replace files' chunks (and drop removed files) in both indexes."""
        for w in writes:
            if w.chunks and (w.vectors is None or w.vectors.ndim != 2 or w.vectors.shape[1] != self.dimension):
                shape = None if w.vectors is None else w.vectors.shape
                raise IndexCorruptError(f"{w.record.file}: vectors of shape {shape} do not fit this "
                                        f"{self.dimension}-d index")
        old_ids = self.catalog.commit(writes, removed)
        self.vectors.remove(old_ids)
        for w in writes:
            if w.chunks:
                assert w.vectors is not None
                self.vectors.add(np.fromiter((c.int_id for c in w.chunks), dtype=np.int64), w.vectors)
        if self.vectors.writes_through:  # already durable: record it now, so a crash costs no resync
            self.vectors.persist(self.catalog.generation)

    def flush(self) -> None:
        """Persist the vectors and the manifest for the catalog's current generation."""
        generation = self.catalog.generation
        if self.vectors.generation != generation:
            self.vectors.persist(generation)
        self.write_manifest()

    def migrate_vectors(self, uri: str, token: str = "") -> VectorLocation:
        """Copy the catalog's vectors into the backend at `uri` and switch this index to it.

        Nothing is re-embedded. The new backend is filled and persisted first; only then does
        the catalog's record switch (one SQLite write), so an interrupted migration leaves the
        index on its old backend. The old backend's data is deleted last (a leftover is harmless).
        """
        target = parse_vector_uri(uri)
        self.token = token or self.token
        if self._same_place(target, self.location):  # another spelling of where the vectors already are
            self.catalog.set_meta(VECTORS_META, target.uri)
            self.location = target
            return target
        old = self.vectors
        new = self._open_backend(target)
        try:
            self._fill(new, self.catalog.generation)
            if new.generation != self.catalog.generation:  # an empty catalog: record generation 0 all the same
                new.persist(self.catalog.generation)
        except BaseException:
            new.close()
            raise
        self.catalog.set_meta(VECTORS_META, target.uri)
        self.vectors, self.location = new, target
        self.write_manifest()
        try:
            old.drop()
        finally:
            old.close()
        return target

    def _same_place(self, a: VectorLocation, b: VectorLocation) -> bool:
        if a.kind != b.kind:
            return False
        if a.kind == "milvus-lite":
            return a.lite_path(self.directory).resolve() == b.lite_path(self.directory).resolve()
        return a.uri == b.uri

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
                "vectors": self.location.uri,
                "fingerprint": self.fingerprint,
                "files": files,
            },
        )

    def drop_vectors(self) -> None:
        """Delete the vector backend's data (before deleting the knowledge base)."""
        self.vectors.drop()

    def close(self) -> None:
        self.vectors.close()
        self.catalog.close()

    # -- reads ---------------------------------------------------------------------
    def files(self) -> dict[str, FileRecord]:
        return self.catalog.files()

    def count(self) -> int:
        return self.vectors.size

    def dense_search(self, query: np.ndarray, n: int) -> list[tuple[int, float]]:
        return self.vectors.search(query, n)

    def keyword_search(self, terms: Sequence[str], n: int, doc_freqs: dict[str, int] | None = None
                       ) -> list[tuple[int, float]]:
        return self.catalog.keyword_search(terms, n, doc_freqs)

    def chunks(self, int_ids: Sequence[int]) -> dict[int, ChunkRow]:
        return self.catalog.chunks(int_ids)

    def vectors_of(self, int_ids: Sequence[int]) -> dict[int, np.ndarray]:
        return self.catalog.vectors(int_ids)
