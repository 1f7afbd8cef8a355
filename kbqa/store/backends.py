"""The vector half of a store, and where it lives: `VectorBackend` and `VectorLocation`.

A knowledge base keeps its catalog (chunk text, metadata, FTS5 keyword index and every
vector) in local SQLite whatever the backend; the vector backend is a derived, searchable
copy of the catalog's vectors, rebuilt from it whenever it is behind. Two backends:

- **FAISS** (default): `vector_store/<kb>/vectors.faiss`, loaded into this process.
- **Milvus**: a collection per knowledge base, in embedded Milvus Lite (a folder on disk,
  served by this process) or on a Milvus server (`http://host:19530`).

A location is written as a URI (`store.uri`, `kbqa migrate --to`):

- `""` or `faiss`: the FAISS file in the index folder.
- `milvus-lite` or `milvus`: Milvus Lite at `<index folder>/vectors.milvus.db`.
- `milvus-lite://PATH`, `milvus://PATH` or `PATH.db`: Milvus Lite at PATH (relative = inside
  the index folder; `milvus:///abs/kb.db` is absolute). The path must end in `.db`.
- `http://`, `https://`, `tcp://` or `unix:` URIs: a Milvus server; the token comes from
  `store.token`, env `MILVUS_TOKEN`, or `user:pass@` in the URI (never recorded on disk).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from kbqa.errors import ConfigError, IndexCorruptError

Kind = Literal["faiss", "milvus-lite", "milvus"]
DEFAULT_LITE_DIR = "vectors.milvus.db"
_SERVER_SCHEMES = ("http", "https", "tcp")


class VectorBackend(Protocol):
    """What `ChunkStore` needs of its vector half. One writer at a time.

    `generation` is the catalog generation the *persisted* vectors reflect; after a crash
    between the catalog commit and `persist`, it lags the catalog's and the store resyncs.
    """

    generation: int
    writes_through: bool
    """True when add/remove are durable once they return (Milvus): the store then records the
    generation after every commit. False (FAISS): vectors are saved by `persist` at flush."""

    @property
    def size(self) -> int: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors (float32, L2-normalised) under int64 chunk ids."""

    def remove(self, ids: list[int]) -> None:
        """Drop these ids (unknown ids are ignored)."""

    def search(self, query: np.ndarray, n: int) -> list[tuple[int, float]]:
        """Top-n (chunk int id, cosine), best first; [] when empty."""

    def reset(self) -> None:
        """Forget every vector (before a resync from the catalog)."""

    def persist(self, generation: int) -> None:
        """Make the current state durable and record that it reflects catalog `generation`."""

    def drop(self) -> None:
        """Delete the persisted vectors (file or collection) for good."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class VectorLocation:
    """A parsed vector URI. `target`: the Lite folder or the server URI (empty for FAISS)."""

    kind: Kind
    target: str = ""

    @property
    def uri(self) -> str:
        """The canonical form, without credentials: what the catalog records and messages show."""
        if self.kind == "faiss":
            return "faiss"
        if self.kind == "milvus-lite":
            return f"milvus-lite://{self.target}"
        return strip_credentials(self.target)

    def lite_path(self, index_dir: Path) -> Path:
        """The Milvus Lite data folder (relative targets live in the index folder)."""
        path = Path(self.target).expanduser()
        return path if path.is_absolute() else index_dir / path

    def inside(self, index_dir: Path) -> bool:
        """Whether the vectors live in the index folder (and so move and go with it)."""
        return self.kind == "faiss" or (self.kind == "milvus-lite" and not Path(self.target).expanduser().is_absolute())


def strip_credentials(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse_vector_uri(uri: str, backend: str = "faiss") -> VectorLocation:
    """Where vectors live, from `store.uri` (and `store.backend` when the URI is empty)."""
    text = uri.strip()
    if not text:
        text = "milvus-lite" if backend == "milvus" else "faiss"
    lower = text.lower()
    if lower == "faiss":
        return VectorLocation("faiss")
    if lower in ("milvus", "milvus-lite"):
        return VectorLocation("milvus-lite", DEFAULT_LITE_DIR)
    for prefix in ("milvus-lite://", "milvus://"):
        if lower.startswith(prefix):
            path = text[len(prefix):] or DEFAULT_LITE_DIR
            if not path.endswith(".db"):
                raise ConfigError(f"store.uri: the Milvus Lite path in {text!r} must end in '.db'")
            return VectorLocation("milvus-lite", path)
    scheme = urlsplit(text).scheme.lower()
    if scheme in _SERVER_SCHEMES or lower.startswith("unix:"):
        if scheme in _SERVER_SCHEMES and not urlsplit(text).hostname:
            raise ConfigError(f"store.uri: {strip_credentials(text)!r} names no host (e.g. http://127.0.0.1:19530)")
        return VectorLocation("milvus", text)
    if lower.endswith(".db") and "://" not in text:
        return VectorLocation("milvus-lite", text)
    raise ConfigError(
        f"store.uri: {strip_credentials(text)!r} is not a vector store URI; use 'faiss', a Milvus Lite file "
        "('milvus-lite://vectors.db', 'path/to/file.db') or a Milvus server ('http://host:19530')"
    )


def collection_name(kb_name: str, store_id: str = "") -> str:
    """The Milvus collection of a knowledge base's index: `kbqa_<name>_<store id>`.

    The store id (random, kept in the catalog) makes every index its own collection: two kbqa
    homes with a KB of the same name can share a server, and a rebuild fills a new collection
    while the old one still serves. Letters, digits and '_' only; names that sanitise alike
    get a hash of the original.
    """
    safe = re.sub(r"[^A-Za-z0-9_]", "_", kb_name)
    if safe != kb_name:
        safe += "_" + hashlib.sha256(kb_name.encode()).hexdigest()[:8]
    suffix = f"_{store_id[:12]}" if store_id else ""
    return f"kbqa_{safe[: 200]}{suffix}"


def checked_vectors(ids: np.ndarray, vectors: np.ndarray, dimension: int) -> tuple[np.ndarray, np.ndarray]:
    """(int64 ids, contiguous float32 vectors) for a backend's `add`; wrong dimensions are refused."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dimension:
        raise IndexCorruptError(f"vector dimension {vectors.shape[-1]} != index dimension {dimension}")
    return np.ascontiguousarray(ids, dtype=np.int64), vectors


@contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write `path` all or nothing: a temp file beside it, fsync, then `os.replace`.

    The temp name is unique because two processes may write the same file at once (a reader
    that rebuilt a stale index saves it while the writer does); a failed write leaves no temp.
    """
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        opened: IO[Any] = os.fdopen(fd, mode) if "b" in mode else os.fdopen(fd, mode, encoding="utf-8")
        with opened as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
