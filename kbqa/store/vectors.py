"""FAISS half of the store: an `IndexIDMap2` over an inner-product index.

Vectors are L2-normalised, so inner product = cosine. The index file carries the
catalog generation it was built from in a small header; a file whose generation
differs from the catalog's (a crash between the SQLite commit and the FAISS save,
or a copy from elsewhere) is rebuilt from the catalog's stored vectors.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from kbqa.errors import ConfigError, IndexCorruptError

_MAGIC = b"KBQAFAIS"
_HEADER = struct.Struct("<8sQ")


def _faiss() -> Any:
    import faiss

    return faiss


class VectorIndex:
    """Dense vectors keyed by chunk int id. Not thread-safe for writes (one writer)."""

    def __init__(self, dimension: int, factory: str = "Flat") -> None:
        faiss = _faiss()
        self.dimension = dimension
        self.factory = factory
        try:
            inner = faiss.index_factory(dimension, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ConfigError(f"store.faiss_index: {factory!r} is not a valid faiss index_factory string") from exc
        self.index = faiss.IndexIDMap2(inner)
        self.generation = 0

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def needs_training(self) -> bool:
        return not self.index.is_trained

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape[1] != self.dimension:
            raise IndexCorruptError(f"vector dimension {vectors.shape[1]} != index dimension {self.dimension}")
        if self.needs_training:
            self.index.train(vectors)
        self.index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: list[int]) -> None:
        if ids:
            self.index.remove_ids(np.asarray(ids, dtype=np.int64))

    def search(self, query: np.ndarray, n: int) -> list[tuple[int, float]]:
        if self.size == 0:
            return []
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        scores, ids = self.index.search(q, min(n, self.size))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    # -- persistence -----------------------------------------------------------
    def save(self, path: Path, generation: int) -> None:
        """Write atomically: temp file in the same folder, fsync, then os.replace."""
        data = _faiss().serialize_index(self.index)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(_HEADER.pack(_MAGIC, generation))
            fh.write(memoryview(data))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        self.generation = generation

    @classmethod
    def load(cls, path: Path, dimension: int, factory: str) -> VectorIndex | None:
        """The saved index, or None if missing or unreadable (the caller rebuilds)."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        if len(raw) < _HEADER.size:
            return None
        magic, generation = _HEADER.unpack_from(raw)
        if magic != _MAGIC:
            return None
        faiss = _faiss()
        try:
            index = faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8, offset=_HEADER.size))
        except RuntimeError:
            return None
        if index.d != dimension:
            return None
        out = cls.__new__(cls)
        out.dimension = dimension
        out.factory = factory
        out.index = index
        out.generation = int(generation)
        return out
