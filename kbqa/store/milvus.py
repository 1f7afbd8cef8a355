"""Milvus half of the store: one collection per knowledge base, in Milvus Lite or on a server.

The collection holds only what dense search needs: `id` (INT64 primary key = the chunk's
int id) and `vec` (FLOAT_VECTOR, inner product on L2-normalised vectors = cosine). Chunk
text, metadata, the FTS5 keyword index and the vectors themselves stay in the local SQLite
catalog (the truth), so the collection is a derived copy that can always be rebuilt from it.

Staleness works as for the FAISS file: the collection's properties record the catalog
generation it reflects (`kbqa.generation`) and which catalog it belongs to (`kbqa.store_id`,
a random id kept in the catalog). Writes reach Milvus at once, so the generation is recorded
after every commit; a crash between the SQLite commit and that record leaves the collection
one generation behind, and the next open rebuilds it from the catalog. A collection built by
another catalog (a knowledge base deleted and created again, a copied index) is rebuilt too.

Milvus Lite runs inside this process (pymilvus starts its server on a loopback port) and locks
its folder: one process at a time. Use a Milvus server when several processes share vectors.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np

from kbqa.errors import DependencyMissingError, IndexCorruptError, VectorStoreError
from kbqa.store.backends import VectorLocation, checked_vectors

GENERATION_KEY = "kbqa.generation"
STORE_ID_KEY = "kbqa.store_id"
MAX_TOP_K = 16_384  # Milvus's limit on one search's limit
BATCH_BYTES = 8 << 20  # rows per insert call: ~8 MB of vectors, well under gRPC's message limit
DELETE_BATCH = 1_000  # ids per delete call: its `id in [...]` expression stays ~20 KB
CONNECT_TIMEOUT_S = 10.0
_INDEX_PARAMS: dict[str, dict[str, int]] = {"HNSW": {"M": 32, "efConstruction": 200}, "IVF_FLAT": {"nlist": 1024},
                                            "IVF_SQ8": {"nlist": 1024}}
_SEARCH_PARAMS: dict[str, dict[str, int]] = {"HNSW": {"ef": 512}, "IVF_FLAT": {"nprobe": 16},
                                             "IVF_SQ8": {"nprobe": 16}}

# Milvus Lite serves a folder from a thread of this process; several stores may share one folder
# (a KnowledgeBase per request in the API), so the server is released when its last user closes.
_lite_lock = threading.Lock()
_lite_users: dict[str, int] = {}


def _pymilvus(uri: str) -> Any:
    try:
        import pymilvus
    except ImportError as exc:
        raise DependencyMissingError("pymilvus", f"the Milvus vector store ({uri})") from exc
    return pymilvus


class MilvusVectors:
    """Dense vectors of one knowledge base in a Milvus collection (the `VectorBackend` face)."""

    writes_through = True
    """add/remove are durable when they return: the store records the generation after each commit."""

    def __init__(
        self,
        location: VectorLocation,
        index_dir: Path,
        collection: str,
        dimension: int,
        store_id: str,
        token: str = "",
        index_type: str = "FLAT",
    ) -> None:
        if location.kind == "faiss":
            raise ValueError("MilvusVectors needs a Milvus location")
        self.location = location
        self.collection = collection
        self.dimension = dimension
        self.store_id = store_id
        self.index_type = index_type.upper()
        self.generation = 0
        self._lite: str | None = None
        self._client: Any = None
        self._size = 0
        self.owned = False
        """Whether the collection was made for this catalog (its `kbqa.store_id`)."""
        pymilvus = _pymilvus(location.uri)
        self._errors: tuple[type[BaseException], ...] = (pymilvus.MilvusException,)
        try:
            if location.kind == "milvus-lite":
                self._client = self._open_lite(pymilvus, location.lite_path(index_dir))
            else:
                token = token or os.environ.get("MILVUS_TOKEN", "")
                self._client = self._call("connect", lambda: pymilvus.MilvusClient(
                    uri=location.target, token=token, timeout=CONNECT_TIMEOUT_S))
            self._open_collection()
        except BaseException:
            self.close()
            raise

    # -- connection -------------------------------------------------------------------
    def _open_lite(self, pymilvus: Any, path: Path) -> Any:
        try:
            import milvus_lite  # noqa: F401 - pymilvus imports it by name for .db URIs
        except ImportError as exc:
            raise DependencyMissingError("milvus-lite", f"the embedded Milvus Lite store ({path})") from exc
        if path.suffix != ".db":
            raise VectorStoreError(f"Milvus Lite path {path} must end in '.db' (pymilvus's rule for local data)")
        if _locked_elsewhere(path):
            raise VectorStoreError(
                f"Milvus Lite data {path} is in use by another process (Milvus Lite allows one process at a "
                "time; stop it, or point store.uri at a Milvus server to share vectors)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        key = str(path.resolve())
        with _lite_lock:
            _lite_users[key] = _lite_users.get(key, 0) + 1
        self._lite = key
        return self._call("open", lambda: pymilvus.MilvusClient(key, timeout=CONNECT_TIMEOUT_S))

    def _call(self, what: str, fn: Any) -> Any:
        """Run one Milvus call; its errors become a `VectorStoreError` naming the URI."""
        try:
            return fn()
        except self._errors as exc:
            detail = getattr(exc, "message", None) or str(exc)
            raise VectorStoreError(
                f"Milvus at {self.location.uri} (collection {self.collection!r}): {what} failed: {detail}"
            ) from exc

    # -- collection ---------------------------------------------------------------------
    def _open_collection(self) -> None:
        c = self._client
        if self._call("list collections", lambda: c.has_collection(self.collection)):
            info = self._call("describe", lambda: c.describe_collection(self.collection))
            fields = {f["name"]: f for f in info.get("fields", [])}
            if "id" not in fields or "vec" not in fields or not fields["id"].get("is_primary"):
                raise IndexCorruptError(
                    f"Milvus at {self.location.uri}: collection {self.collection!r} was not made by kbqa "
                    "(no 'id' primary key and 'vec' field); drop or rename it"
                )
            if int(fields["vec"].get("params", {}).get("dim", 0)) != self.dimension:
                self.reset()  # built for another embedding: derived data, rebuilt from the catalog
                return
            props = info.get("properties") or {}
            self.owned = props.get(STORE_ID_KEY) == self.store_id
            self.generation = int(props.get(GENERATION_KEY, -1)) if self.owned else -1
            self._call("load", lambda: c.load_collection(self.collection))
            if self._lite is not None:  # rows replayed from Milvus Lite's write-ahead log after a crash
                self._call("flush", lambda: c.flush(self.collection))
            self._size = self._count()
        else:
            self._create()

    def _create(self) -> None:
        pymilvus, c = _pymilvus(self.location.uri), self._client
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False, description="kbqa chunk vectors")
        schema.add_field("id", pymilvus.DataType.INT64, is_primary=True)
        schema.add_field("vec", pymilvus.DataType.FLOAT_VECTOR, dim=self.dimension)
        index = c.prepare_index_params()
        index.add_index(field_name="vec", index_type=self.index_type, metric_type="IP",
                        params=_INDEX_PARAMS.get(self.index_type, {}))
        self._call("create collection", lambda: c.create_collection(
            self.collection, schema=schema, index_params=index, consistency_level="Strong",
            properties={GENERATION_KEY: "0", STORE_ID_KEY: self.store_id}))
        self.generation = 0
        self.owned = True
        self._size = 0

    def _count(self) -> int:
        rows = self._call("count", lambda: self._client.query(self.collection, filter="", output_fields=["count(*)"]))
        return int(rows[0]["count(*)"]) if rows else 0

    # -- VectorBackend -------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self._size

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids, vectors = checked_vectors(ids, vectors, self.dimension)
        step = max(1, BATCH_BYTES // (4 * self.dimension))
        for start in range(0, len(ids), step):
            part_ids, part = ids[start : start + step].tolist(), vectors[start : start + step].tolist()
            rows = [{"id": i, "vec": v} for i, v in zip(part_ids, part, strict=True)]
            self._call("insert", lambda rows=rows: self._client.insert(self.collection, rows))
            self._size += len(rows)

    def remove(self, ids: list[int]) -> None:
        if not ids:
            return
        for start in range(0, len(ids), DELETE_BATCH):
            part = [int(i) for i in ids[start : start + DELETE_BATCH]]
            self._call("delete", lambda part=part: self._client.delete(self.collection, ids=part))
        # The store removes only ids the catalog had, which a collection at the catalog's generation
        # holds; counting would cost a query per commit. Search does not rely on this number.
        self._size = max(0, self._size - len(set(ids)))

    def search(self, query: np.ndarray, n: int) -> list[tuple[int, float]]:
        k = min(n, MAX_TOP_K)
        if k <= 0 or self._size <= 0:
            return []
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        params: dict[str, Any] = {"metric_type": "IP", "params": _SEARCH_PARAMS.get(self.index_type, {})}
        res = self._call("search", lambda: self._client.search(
            self.collection, data=[q.tolist()], limit=k, anns_field="vec", search_params=params, output_fields=["id"]))
        return [(int(hit["id"]), float(hit["distance"])) for hit in res[0]]

    def reset(self) -> None:
        self._call("drop collection", lambda: self._client.drop_collection(self.collection))
        self._create()

    def persist(self, generation: int) -> None:
        if self._lite is not None:  # Milvus Lite searches unflushed rows row by row (~0.5 s at 6k): seal them
            self._call("flush", lambda: self._client.flush(self.collection))
        self._call("record generation", lambda: self._client.alter_collection_properties(
            self.collection, properties={GENERATION_KEY: str(generation), STORE_ID_KEY: self.store_id}))
        self.generation = generation

    def drop(self) -> None:
        self._call("drop collection", lambda: self._client.drop_collection(self.collection))
        self._size, self.generation = 0, 0
        if self._lite is not None and not self._call("list collections", self._client.list_collections):
            lite = self._lite
            self.close()
            with _lite_lock:
                unused = lite not in _lite_users  # no other store of this process serves from it
            if unused:
                shutil.rmtree(lite, ignore_errors=True)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(*self._errors):
                client.close()
        lite, self._lite = self._lite, None
        if lite is None:
            return
        with _lite_lock:
            _lite_users[lite] -= 1
            last = _lite_users[lite] == 0
            if last:
                del _lite_users[lite]
        if last:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(lite)


def _locked_elsewhere(path: Path) -> bool:
    """Whether another process holds Milvus Lite's lock on `path` (not one of this process's stores)."""
    lock = path / "LOCK"
    if not lock.exists():
        return False
    with _lite_lock:
        if str(path.resolve()) in _lite_users:
            return False
    try:
        import fcntl
    except ImportError:  # Windows: let Milvus Lite report it
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
