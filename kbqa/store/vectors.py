"""FAISS half of the store: an `IndexIDMap2` over an inner-product index.

Vectors are L2-normalised, so inner product = cosine. The index file carries the
catalog generation it was built from in a small header; a file whose generation
differs from the catalog's (a crash between the SQLite commit and the FAISS save,
or a copy from elsewhere) is rebuilt from the catalog's stored vectors.

`store.faiss_index` is a `faiss.index_factory` string ("Flat" = exact), optionally
followed by `;` and search/build parameters: ``"HNSW32,SQ8"``, ``"HNSW32,SQ8;efSearch=256"``,
``"IVF4096,SQ8;nprobe=64"``, ``"HNSW32;efConstruction=80"``. Approximate indexes work as
follows:

- **Training.** An index that needs training (IVF, PQ, SQ) keeps vectors in an exact
  flat *buffer* — searched exactly, saved like any index — until it holds enough of them
  to train well (`training_size`: 40 per IVF list, 40 per PQ centroid, at least 2,000),
  then trains on the whole buffer and moves it in. Rebuilding from the catalog walks
  chunks in int-id (hash) order, so that training set is a uniform sample.
- **Search parameters.** `efSearch` (HNSW) and `nprobe` (IVF) get defaults that keep
  recall@10 against exact search at or above 0.95 on 1M chunks (benchmarks/bench_scale.py);
  anything `faiss.ParameterSpace` knows can be set after the `;`.
- **Removal.** Indexes that cannot delete (HNSW) mark removed entries dead and skip them
  at search time (an `IDSelector`); once a quarter of the entries are dead the index is
  compacted (rebuilt from its own stored vectors).

The file records the factory string it was built with; opening it with a different
one returns None, so the caller rebuilds from the catalog. Saving streams the index to
a temp file (no second in-memory copy) and swaps it in with `os.replace`.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from kbqa.errors import ConfigError
from kbqa.store.backends import atomic_write, checked_vectors

_MAGIC_V1 = b"KBQAFAIS"  # v1: magic, generation, then the faiss index (written by Flat-only versions)
_HEADER_V1 = struct.Struct("<8sQ")
_MAGIC = b"KBQAFAI2"  # v2: magic, generation, state, dead count, spec length; spec; dead positions; index
_HEADER = struct.Struct("<8sQBQH")
_STATE_INDEX, _STATE_BUFFER = 0, 1

DEFAULT_EF_SEARCH = 512
DEFAULT_NPROBE_SHARE = 1 / 64  # nprobe = nlist / 64 (at least 8): 64 of IVF4096
MIN_TRAINING = 2_000
TRAINING_PER_CENTROID = 40
COMPACT_SHARE = 0.25
_BUILD_PARAMS = frozenset({"efConstruction"})


def _faiss() -> Any:
    import faiss

    return faiss


def parse_spec(spec: str) -> tuple[str, dict[str, float]]:
    """`"HNSW32,SQ8;efSearch=256"` → (`"HNSW32,SQ8"`, {"efSearch": 256})."""
    factory, _, tail = spec.partition(";")
    params: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in tail.replace(";", ",").split(","))):
        name, eq, value = part.partition("=")
        try:
            params[name.strip()] = float(value)
        except ValueError:
            eq = ""
        if not eq:
            raise ConfigError(f"store.faiss_index: {part!r} in {spec!r} is not NAME=NUMBER")
    return factory.strip() or "Flat", params


def _build_key(spec: str) -> str:
    """What must match for a saved index to be reused (search parameters may change freely)."""
    factory, params = parse_spec(spec)
    build = ",".join(f"{k}={params[k]:g}" for k in sorted(params) if k in _BUILD_PARAMS)
    return f"{factory};{build}" if build else factory


def training_size(inner: Any) -> int:
    """How many vectors `inner` should be trained on (0 = needs no training)."""
    if inner.is_trained:
        return 0
    faiss = _faiss()
    need = MIN_TRAINING
    ivf = faiss.try_extract_index_ivf(inner)
    if ivf is not None:
        need = max(need, TRAINING_PER_CENTROID * int(ivf.nlist))
    stack = [inner]
    while stack:
        obj = faiss.downcast_index(stack.pop())
        pq = getattr(obj, "pq", None)
        if pq is not None:
            need = max(need, TRAINING_PER_CENTROID * int(pq.ksub))
        stack.extend(getattr(obj, a) for a in ("index", "storage", "base_index") if getattr(obj, a, None) is not None)
    return need


class VectorIndex:
    """Dense vectors keyed by chunk int id. Not thread-safe for writes (one writer)."""

    writes_through = False  # the `VectorBackend` face: saved whole by `persist`, at flush

    def __init__(self, dimension: int, factory: str = "Flat", path: Path | None = None) -> None:
        self.dimension = dimension
        self.factory = factory
        self.path = path  # where `persist` saves (the `VectorBackend` face); `save` takes any path
        self.generation = 0
        self.reset()

    def reset(self) -> None:
        """Forget every vector: a fresh, empty index of the same kind."""
        self._inner = self._new_inner()
        self._buffer: Any = None  # IndexIDMap2(IndexFlatIP) while the inner index waits for training
        self._dead: set[int] = set()  # internal positions of removed entries (indexes that cannot delete)
        self._skip: Any = None  # cached IDSelector over the live positions
        self.index: Any = _faiss().IndexIDMap2(self._inner)
        if not self._inner.is_trained:
            self._buffer = self._new_buffer()

    # -- construction ---------------------------------------------------------------
    def _new_inner(self) -> Any:
        faiss = _faiss()
        name, params = parse_spec(self.factory)
        try:
            inner = faiss.index_factory(self.dimension, name, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ConfigError(f"store.faiss_index: {name!r} is not a valid faiss index_factory string") from exc
        hnsw = self._hnsw(inner)
        if "efConstruction" in params:
            if hnsw is None:
                raise ConfigError(f"store.faiss_index: efConstruction needs an HNSW index, not {name!r}")
            hnsw.hnsw.efConstruction = int(params["efConstruction"])
        self._set_search_params(inner)
        return inner

    def _new_buffer(self) -> Any:
        faiss = _faiss()
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dimension))

    @staticmethod
    def _hnsw(inner: Any) -> Any:
        faiss = _faiss()
        obj = faiss.downcast_index(inner)
        return obj if isinstance(obj, faiss.IndexHNSW) else None

    def _set_search_params(self, inner: Any) -> None:
        faiss = _faiss()
        name, params = parse_spec(self.factory)
        search = {k: v for k, v in params.items() if k not in _BUILD_PARAMS}
        if self._hnsw(inner) is not None:
            search.setdefault("efSearch", DEFAULT_EF_SEARCH)
        ivf = faiss.try_extract_index_ivf(inner)
        if ivf is not None:
            search.setdefault("nprobe", max(8, min(int(ivf.nlist), round(ivf.nlist * DEFAULT_NPROBE_SHARE))))
        space = faiss.ParameterSpace()
        for key, value in search.items():
            try:
                space.set_index_parameter(inner, key, value)
            except RuntimeError as exc:
                raise ConfigError(f"store.faiss_index: {name!r} has no search parameter {key!r}") from exc

    # -- state ------------------------------------------------------------------------
    @property
    def size(self) -> int:
        if self._buffer is not None:
            return int(self._buffer.ntotal)
        return int(self.index.ntotal) - len(self._dead)

    @property
    def needs_training(self) -> bool:
        """True while vectors wait in the exact buffer for enough data to train on."""
        return self._buffer is not None

    @property
    def training_size(self) -> int:
        return training_size(self._inner)

    # -- writes -----------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids, vectors = checked_vectors(ids, vectors, self.dimension)
        if self._buffer is None:
            self.index.add_with_ids(vectors, ids)
            self._skip = None
            return
        self._buffer.add_with_ids(vectors, ids)
        if self._buffer.ntotal >= self.training_size:
            self._train_from_buffer()

    def _train_from_buffer(self) -> None:
        buffer, self._buffer = self._buffer, None
        ids, vectors = _contents(buffer)
        self._inner.train(vectors)
        self.index.add_with_ids(vectors, ids)

    def remove(self, ids: list[int]) -> None:
        if not ids:
            return
        wanted = np.asarray(ids, dtype=np.int64)
        if self._buffer is not None:
            self._buffer.remove_ids(wanted)
            return
        if self._hnsw(self._inner) is None:
            try:
                self.index.remove_ids(wanted)
            except RuntimeError as exc:
                raise ConfigError(f"store.faiss_index: {self.factory!r} cannot remove vectors; use Flat, "
                                  "an HNSW or an IVF index") from exc
            return
        stored = _id_map(self.index)
        hit = np.flatnonzero(np.isin(stored, wanted))
        self._dead.update(int(p) for p in hit)
        self._skip = None
        if len(self._dead) >= COMPACT_SHARE * self.index.ntotal:
            self._compact()

    def _compact(self) -> None:
        """Rebuild without the dead entries, from the index's own stored vectors."""
        dead = np.fromiter(self._dead, dtype=np.int64, count=len(self._dead))
        live = np.setdiff1d(np.arange(self.index.ntotal, dtype=np.int64), dead)
        ids = _id_map(self.index)[live].copy()
        old_inner, old_index = self._inner, self.index
        self._inner = self._new_inner()
        self.index = _faiss().IndexIDMap2(self._inner)
        self._buffer = None if self._inner.is_trained else self._new_buffer()
        self._dead, self._skip = set(), None
        for start in range(0, len(live), 50_000):
            part = live[start : start + 50_000]
            self.add(ids[start : start + 50_000], old_inner.reconstruct_batch(part))
        del old_index

    # -- reads ------------------------------------------------------------------------
    def search(self, query: np.ndarray, n: int) -> list[tuple[int, float]]:
        size = self.size
        if size == 0:
            return []
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        k = min(n, size)
        # One query gains nothing from OpenMP threads and, on a busy CPU, loses milliseconds waiting
        # for them (HNSW at 20k on a busy 2-core box: 8 ms with 2 threads, 0.4 ms with 1). It is per thread.
        faiss = _faiss()
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            if self._buffer is not None:
                scores, ids = self._buffer.search(q, k)
            elif self._dead:
                scores, pos = self._inner.search(q, k, params=self._skip_params())
                ids = np.where(pos >= 0, _id_map(self.index)[np.maximum(pos, 0)], -1)
            else:
                scores, ids = self.index.search(q, k)
        finally:
            faiss.omp_set_num_threads(threads)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def _skip_params(self) -> Any:
        faiss = _faiss()
        if self._skip is None:
            batch = faiss.IDSelectorBatch(np.fromiter(self._dead, dtype=np.int64))
            self._skip = (batch, faiss.IDSelectorNot(batch))  # keep `batch` alive while the Not uses it
        hnsw = self._hnsw(self._inner)
        return faiss.SearchParametersHNSW(sel=self._skip[1], efSearch=hnsw.hnsw.efSearch)

    # -- persistence --------------------------------------------------------------------
    def save(self, path: Path, generation: int) -> None:
        """Write atomically: temp file in the same folder, fsync, then os.replace."""
        faiss = _faiss()
        spec = _build_key(self.factory).encode()
        dead = np.fromiter(sorted(self._dead), dtype=np.int64)
        state = _STATE_BUFFER if self._buffer is not None else _STATE_INDEX
        with atomic_write(path) as fh:
            fh.write(_HEADER.pack(_MAGIC, generation, state, len(dead), len(spec)))
            fh.write(spec)
            fh.write(dead.tobytes())
            writer = faiss.PyCallbackIOWriter(fh.write)
            faiss.write_index(self._buffer if self._buffer is not None else self.index, writer)
            del writer
        self.generation = generation

    def persist(self, generation: int) -> None:
        if self.path is None:
            raise ValueError("VectorIndex.persist needs the index's path")
        self.save(self.path, generation)

    def drop(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        self.reset()
        self.generation = 0

    def close(self) -> None:
        """Nothing to release: the index lives in this process's memory."""

    @classmethod
    def load(cls, path: Path, dimension: int, factory: str) -> VectorIndex | None:
        """The saved index, or None if missing, unreadable or built otherwise (the caller rebuilds)."""
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below; the reader streams from it
        except FileNotFoundError:
            return None
        with fh:
            try:
                out = cls._read(fh, dimension, factory)
                if out is not None:
                    out.path = path
                return out
            except (RuntimeError, MemoryError, OverflowError, ValueError, struct.error, UnicodeDecodeError):
                return None

    @classmethod
    def _read(cls, fh: BinaryIO, dimension: int, factory: str) -> VectorIndex | None:
        faiss = _faiss()
        head = fh.read(_HEADER.size)
        if head[:8] == _MAGIC_V1:  # older file: only an exact Flat index can be reused as is
            fh.seek(_HEADER_V1.size)
            generation, state, dead, spec = _HEADER_V1.unpack(head[: _HEADER_V1.size])[1], _STATE_INDEX, 0, "Flat"
        elif head[:8] == _MAGIC:
            _, generation, state, n_dead, n_spec = _HEADER.unpack(head)
            spec = fh.read(n_spec).decode()
            dead = n_dead
        else:
            return None
        if spec != _build_key(factory):
            return None
        dead_pos = np.frombuffer(fh.read(8 * dead), dtype=np.int64) if dead else np.zeros(0, dtype=np.int64)
        reader = faiss.PyCallbackIOReader(fh.read)
        stored = faiss.read_index(reader)
        del reader
        if stored.d != dimension or not isinstance(stored, faiss.IndexIDMap2):
            return None
        out = cls(dimension, factory)  # fresh inner index with its search parameters
        out.generation = int(generation)
        if state == _STATE_BUFFER:
            if out._buffer is None:
                return None
            out._buffer = stored
            return out
        inner = faiss.downcast_index(stored.index)  # owned by `stored`, which `out.index` keeps alive
        if not inner.is_trained or inner.metric_type != faiss.METRIC_INNER_PRODUCT:
            return None
        out._set_search_params(inner)
        out._inner, out.index, out._buffer = inner, stored, None
        out._dead = {int(p) for p in dead_pos}
        return out


def _id_map(index: Any) -> np.ndarray:
    """The external ids of an IndexIDMap2 by internal position (a view: do not keep it)."""
    n = int(index.id_map.size())
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    return _faiss().rev_swig_ptr(index.id_map.data(), n)  # type: ignore[no-any-return]


def _contents(buffer: Any) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) held by an IndexIDMap2 over an IndexFlat."""
    faiss = _faiss()
    flat = faiss.downcast_index(buffer.index)
    n = int(flat.ntotal)
    vectors = faiss.rev_swig_ptr(flat.get_xb(), n * flat.d).reshape(n, flat.d).copy()
    return _id_map(buffer).copy(), vectors


