"""What one server process shares: the models (loaded once) and one cached `KnowledgeBase` per name.

Concurrency, conservatively:

* **One writer per knowledge base.** Indexing, removing files, creating and deleting hold the
  KB's write lock. A writer works on its own `KnowledgeBase` (its own SQLite connection and
  FAISS index), so it never touches objects that readers are using.
* **Reads proceed during writes.** Search and ask use the cached *reader* instance. SQLite (WAL)
  shows the reader only committed waves; its FAISS index is the one loaded before the write, so
  during a long job answers come from the index as it was plus any newly committed keyword
  matches (the retriever skips chunks that are gone). When the write finishes, the writer
  instance becomes the reader; the old one is closed once its last in-flight request is done.
* Opening a reader may write (first fingerprint, rebuilding a stale FAISS file), so readers are
  only ever opened under the write lock.
* **Models are shared** between all instances: the embedding model behind a lock (an indexing
  batch and a query take turns), the LLM as built (local backends serialise their own
  generation; answer streams are always consumed on a single thread).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kbqa.config import Settings
from kbqa.embeddings import KbqaEmbeddings, make_embeddings
from kbqa.errors import KbqaError, KnowledgeBaseNotFoundError
from kbqa.kb import KnowledgeBase, validate_kb_name
from kbqa.llm import ChatBackend, make_chat_model
from kbqa.loaders import Loaders
from kbqa.store import CATALOG_FILE
from kbqa.tokenize import Tokenizer

from .errors import ConflictError


class LockedEmbeddings(KbqaEmbeddings):
    """An embedding model shared by threads: one encode call at a time."""

    def __init__(self, inner: KbqaEmbeddings) -> None:
        self.inner = inner
        self.batch_size = inner.batch_size
        self.normalized = inner.normalized
        self._lock = threading.RLock()

    @property
    def model_id(self) -> str:  # type: ignore[override]
        return self.inner.model_id

    @property
    def query_prompt(self) -> str:  # type: ignore[override]
        return self.inner.query_prompt

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def warm_up(self) -> None:
        with self._lock:
            self.inner.warm_up()

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        with self._lock:
            return self.inner.encode(texts, batch_size)

    def encode_queries(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        with self._lock:
            return self.inner.encode_queries(texts, batch_size)

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:  # pragma: no cover - encode is delegated
        with self._lock:
            return self.inner._encode(texts, batch_size)

    def __repr__(self) -> str:
        return f"LockedEmbeddings({self.inner!r})"


class Resources:
    """The models of one server process, built once (weights load on first use)."""

    def __init__(self, settings: Settings, *, embeddings: KbqaEmbeddings | None = None,
                 llm: ChatBackend | None = None, loaders: Any = None, tokenizer: Tokenizer | None = None) -> None:
        self.settings = settings
        self.embeddings = LockedEmbeddings(embeddings or make_embeddings(settings.embedding))
        self.llm = llm if llm is not None else make_chat_model(settings.llm)
        self.loaders = loaders if loaders is not None else Loaders(settings.loaders)
        self.tokenizer = tokenizer or Tokenizer()

    def inject(self) -> dict[str, Any]:
        return {"embeddings": self.embeddings, "llm": self.llm, "loaders": self.loaders, "tokenizer": self.tokenizer}

    def supports(self, path: Any) -> bool:
        return bool(self.loaders.supports(path))


@dataclass
class _Reader:
    kb: KnowledgeBase
    users: int = 0
    retired: bool = False
    catalog_id: tuple[int, int] | None = None  # (device, inode) of the catalog file it opened

    def __post_init__(self) -> None:
        self.catalog_id = _catalog_id(self.kb)

    def stale(self) -> bool:
        """Changed on disk by another process since it was opened: `kbqa index` committed (the
        catalog's generation moved past the vectors in memory), or a rebuild swapped the folder."""
        store = self.kb._store
        if store is None or _catalog_id(self.kb) != self.catalog_id:
            return True
        try:
            return bool(store.catalog.generation != store.vectors.generation)
        except KbqaError:
            return True


def _catalog_id(kb: KnowledgeBase) -> tuple[int, int] | None:
    try:
        st = os.stat(kb.index_dir / CATALOG_FILE)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@dataclass
class _Entry:
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    guard: threading.Lock = field(default_factory=threading.Lock)
    reader: _Reader | None = None


class KBRegistry:
    """Cached knowledge bases by name, with a write lock each (see the module docstring)."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.settings = resources.settings
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    # -- helpers --------------------------------------------------------------------------
    def _new(self, name: str) -> KnowledgeBase:
        return KnowledgeBase(name, self.settings, **self.resources.inject())

    def exists(self, name: str) -> bool:
        return self._new(validate_kb_name(name)).exists()

    def require(self, name: str) -> None:
        """Raise `KnowledgeBaseNotFoundError` (or `ConfigError` for a bad name) unless `name` exists."""
        self._entry(name)

    def names(self) -> list[str]:
        return KnowledgeBase.list_names(self.settings)

    def _entry(self, name: str, must_exist: bool = True) -> _Entry:
        validate_kb_name(name)
        if must_exist and not self.exists(name):  # checked every time: it may have been deleted since
            KnowledgeBase.open(name, self.settings, **self.resources.inject())  # raises, naming the KBs
            raise KnowledgeBaseNotFoundError(name)  # pragma: no cover - open() raised
        with self._lock:
            return self._entries.setdefault(name, _Entry())

    def _open(self, name: str) -> KnowledgeBase:
        kb = KnowledgeBase.open(name, self.settings, **self.resources.inject())
        try:
            _ = kb.store
        except BaseException:
            kb.close()
            raise
        return kb

    @staticmethod
    def _release(entry: _Entry, reader: _Reader) -> None:
        with entry.guard:
            reader.users -= 1
            close = reader.retired and reader.users == 0
        if close:
            reader.kb.close()

    @staticmethod
    def _replace_reader(entry: _Entry, kb: KnowledgeBase | None) -> None:
        """Make `kb` the reader; the old reader closes when its last user is done."""
        with entry.guard:
            old = entry.reader
            entry.reader = _Reader(kb) if kb is not None else None
            close = old is not None and old.users == 0
            if old is not None:
                old.retired = True
        if close and old is not None:
            old.kb.close()

    def _acquire(self, entry: _Entry, name: str, timeout: float | None) -> None:
        if not entry.write_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise ConflictError(f"knowledge base {name!r} is busy indexing; try again when its job is done "
                                "(GET /api/jobs)")

    # -- public ---------------------------------------------------------------------------
    @contextmanager
    def reading(self, name: str) -> Iterator[KnowledgeBase]:
        """The shared reader instance of `name`, held until the block ends.

        A reader that another process changed on disk (see `_Reader.stale`) is replaced first,
        so answers match what a fresh `kbqa search` would give; while this server writes the KB
        itself, readers keep the index as it was (module docstring).
        """
        entry = self._entry(name)
        reader: _Reader | None = None
        with entry.guard:
            if entry.reader is not None and (entry.write_lock.locked() or not entry.reader.stale()):
                reader = entry.reader
                reader.users += 1
        if reader is None:
            with entry.write_lock:
                with entry.guard:
                    current = entry.reader
                if current is None or current.stale():
                    self._replace_reader(entry, self._open(name))
                with entry.guard:
                    reader = entry.reader
                    assert reader is not None
                    reader.users += 1
        try:
            yield reader.kb
        finally:
            self._release(entry, reader)

    @contextmanager
    def writing(self, name: str, timeout: float | None = None) -> Iterator[KnowledgeBase]:
        """A private instance of `name` for writing, under the KB's write lock; it becomes the reader after.

        Its index opens on first use, so a rebuild never opens the old index (which may have
        been built with another embedding model: exactly what a rebuild is for).
        """
        entry = self._entry(name)
        self._acquire(entry, name, timeout)
        try:
            with entry.guard:
                have_reader = entry.reader is not None
            if not have_reader:
                # Opened now, so that reads during the write never open the index themselves. If it
                # cannot be opened (built with another model), reads wait for this write, which may fix it.
                with suppress(KbqaError):
                    self._replace_reader(entry, self._open(name))
            writer = KnowledgeBase.open(name, self.settings, **self.resources.inject())
            try:
                yield writer
            except BaseException:
                self._promote(entry, writer, quiet=True)
                raise
            self._promote(entry, writer)
        finally:
            entry.write_lock.release()

    def _promote(self, entry: _Entry, writer: KnowledgeBase, quiet: bool = False) -> None:
        """The writer becomes the reader (its index opened here, under the lock, if it was closed)."""
        try:
            _ = writer.store
        except KbqaError:
            writer.close()
            self._replace_reader(entry, None)
            if not quiet:
                raise
            return
        self._replace_reader(entry, writer)

    def create(self, name: str) -> None:
        """Create `name` (KnowledgeBaseExistsError if it exists); the new instance becomes its reader."""
        entry = self._entry(name, must_exist=False)
        with entry.write_lock:
            self._replace_reader(entry, KnowledgeBase.create(name, self.settings, **self.resources.inject()))

    def delete(self, name: str, timeout: float | None = None) -> None:
        entry = self._entry(name)
        self._acquire(entry, name, timeout)
        try:
            self._replace_reader(entry, None)
            KnowledgeBase.delete(name, self.settings)
        finally:
            entry.write_lock.release()

    def close(self) -> None:
        with self._lock:
            entries = list(self._entries.values())
        for entry in entries:
            self._replace_reader(entry, None)
