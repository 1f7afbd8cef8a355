"""`KnowledgeBase`: the public face of kbqa.

A knowledge base named N lives in two folders under `settings.home`:
`knowledge/N/` holds its source files (what `add` copies in), `vector_store/N/` its
index. Everything heavy (embedding model, jieba, OCR) loads on first use.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbqa.config import Settings, load_settings
from kbqa.errors import ConfigError, KbqaError, KnowledgeBaseExistsError, KnowledgeBaseNotFoundError
from kbqa.rerank import Reranker
from kbqa.schema import Answer, FileResult, IngestReport, Retrieved, Source
from kbqa.splitter import ChineseRecursiveSplitter
from kbqa.store import CATALOG_FILE, ChunkStore, drop_outside_vectors, recorded_vectors
from kbqa.store.backends import strip_credentials
from kbqa.tokenize import TERMS_VERSION, Tokenizer

if TYPE_CHECKING:  # imported where used: `kbqa search` must not pay for indexing, the LLM stack or LangChain
    from kbqa.embeddings import KbqaEmbeddings
    from kbqa.index import Indexer, ProgressFn
    from kbqa.langchain_retriever import KbqaLangchainRetriever
    from kbqa.llm import ChatBackend
    from kbqa.loaders import Loaders
    from kbqa.qa import AnswerChain, History
    from kbqa.retriever import HybridRetriever

_NAME = re.compile(r"^[\w][\w.\-]{0,63}$", re.UNICODE)


def validate_kb_name(name: str) -> str:
    if not _NAME.match(name) or ".." in name:
        raise ConfigError(
            f"invalid knowledge base name {name!r}: use letters, digits, '_', '-' or '.', up to 64 characters"
        )
    return name


def _same_content(src: Path, dest: Path) -> bool:
    """True if dest is already a copy of src (copy2 keeps mtime, so size+mtime is the fast path)."""
    from kbqa.index import sha256_file

    if not dest.is_file():
        return False
    a, b = src.stat(), dest.stat()
    if a.st_size != b.st_size:
        return False
    return a.st_mtime == b.st_mtime or sha256_file(src) == sha256_file(dest)


class KnowledgeBase:
    """One knowledge base. Build with `create` or `open`; collaborators may be injected."""

    def __init__(
        self,
        name: str,
        settings: Settings | None = None,
        *,
        embeddings: KbqaEmbeddings | None = None,
        loaders: Loaders | None = None,
        tokenizer: Tokenizer | None = None,
        llm: ChatBackend | None = None,
        reranker: Reranker | None = None,
    ) -> None:
        self.name = validate_kb_name(name)
        self.settings = settings or load_settings()
        self._embeddings = embeddings
        self._loaders = loaders
        self._tokenizer = tokenizer or Tokenizer()
        self._splitter = ChineseRecursiveSplitter(self.settings.splitter)
        self._store: ChunkStore | None = None
        self._llm = llm
        self._llm_built = llm is not None
        self._reranker = reranker
        self._reranker_built = reranker is not None

    # -- construction ------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, settings: Settings | None = None, *, exist_ok: bool = False, **inject: Any
               ) -> KnowledgeBase:
        kb = cls(name, settings, **inject)
        if kb.exists() and not exist_ok:
            raise KnowledgeBaseExistsError(f"knowledge base {name!r} already exists in {kb.settings.home}")
        kb.knowledge_dir.mkdir(parents=True, exist_ok=True)
        _ = kb.store  # creates the index folder and records the fingerprint
        return kb

    @classmethod
    def open(cls, name: str, settings: Settings | None = None, **inject: Any) -> KnowledgeBase:
        kb = cls(name, settings, **inject)
        if not kb.exists():
            known = ", ".join(cls.list_names(kb.settings)) or "none yet"
            raise KnowledgeBaseNotFoundError(
                f"no knowledge base {name!r} in {kb.settings.home} (existing: {known}); "
                f"create it with: kbqa index PATH --kb {name}"
            )
        return kb

    @staticmethod
    def list_names(settings: Settings | None = None) -> list[str]:
        settings = settings or load_settings()
        names: set[str] = set()
        for base in (settings.knowledge_dir, settings.vector_store_dir):
            if base.is_dir():
                names.update(p.name for p in base.iterdir() if p.is_dir() and _NAME.match(p.name))
        return sorted(names)

    @classmethod
    def delete(cls, name: str, settings: Settings | None = None, *, keep_files: bool = False) -> None:
        kb = cls.open(name, settings)
        kb.close()
        kb._drop_outside_vectors(kb.index_dir)
        shutil.rmtree(kb.index_dir, ignore_errors=True)
        if not keep_files:
            shutil.rmtree(kb.knowledge_dir, ignore_errors=True)

    # -- paths and lazy parts ------------------------------------------------------------
    @property
    def knowledge_dir(self) -> Path:
        return self.settings.knowledge_dir / self.name

    @property
    def index_dir(self) -> Path:
        return self.settings.vector_store_dir / self.name

    def exists(self) -> bool:
        return self.knowledge_dir.is_dir() or (self.index_dir / CATALOG_FILE).is_file()

    @property
    def embeddings(self) -> KbqaEmbeddings:
        if self._embeddings is None:
            from kbqa.embeddings import make_embeddings

            self._embeddings = make_embeddings(self.settings.embedding)
        return self._embeddings

    @property
    def reranker(self) -> Reranker | None:
        """The rerank stage from `retrieval.reranker` (None = off); its model loads on the first question."""
        if not self._reranker_built:
            from kbqa.rerank import make_reranker

            self._reranker = make_reranker(self.settings.retrieval.reranker, self.settings.home,
                                           self.settings.embedding.device)
            self._reranker_built = True
        return self._reranker

    @property
    def llm(self) -> ChatBackend | None:
        """The answering model from `settings.llm` (None for the 'extractive' backend); loads on first use."""
        if not self._llm_built:
            from kbqa.llm import make_chat_model

            self._llm = make_chat_model(self.settings.llm)
            self._llm_built = True
        return self._llm

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            from kbqa.loaders import Loaders

            self._loaders = Loaders(self.settings.loaders)
        return self._loaders

    def fingerprint(self) -> dict[str, Any]:
        emb = self.embeddings
        return {
            "embedding": {"model_id": emb.model_id, "dimension": emb.dimension, "normalized": emb.normalized},
            "splitter": self._splitter.fingerprint(),
            "store": {"backend": self.settings.store.backend, "faiss_index": self.settings.store.faiss_index},
        }

    def _split_key(self) -> str:
        """Changes whenever settings that change the chunks change: such files are re-split."""
        loader = self.settings.loaders.model_dump(include={"ocr", "ocr_min_chars", "table_rows_per_chunk"})
        raw = json.dumps([self._splitter.fingerprint(), loader, TERMS_VERSION], sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    @property
    def store(self) -> ChunkStore:
        if self._store is None:
            self._recover_swap()
            self._store = self._open_store(self.index_dir, self.settings.store.vector_uri)
        return self._store

    def _open_store(self, directory: Path, vectors: str) -> ChunkStore:
        """The index in `directory`; `vectors` is the backend URI if it is new (else it keeps its own)."""
        cfg = self.settings.store
        return ChunkStore(
            directory,
            self.fingerprint(),
            cfg.faiss_index,
            rebuild_hint=f"kbqa index --kb {self.name} --rebuild",
            vectors=vectors,
            token=cfg.token,
            collection=self.name,
            milvus_index=cfg.milvus_index,
        )

    def _vectors_uri(self) -> str:
        """The backend this KB records (with the settings' credentials when it is the same server)."""
        recorded = recorded_vectors(self.index_dir)
        configured = self.settings.store.vector_uri
        if recorded is None or strip_credentials(configured) == recorded:
            return configured
        return recorded

    def migrate(self, to: str) -> str:
        """Move the KB's vectors to another backend (`faiss`, a Milvus Lite file, a Milvus server).

        Copies the vectors stored in the catalog, so nothing is re-embedded; an interrupted
        migration leaves the KB usable on its old backend. Returns the new backend's URI.
        """
        return self.store.migrate_vectors(to, self.settings.store.token).uri

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- indexing ------------------------------------------------------------------------
    def _indexer(self) -> Indexer:
        from kbqa.index import Indexer
        from kbqa.loaders import Loaders

        # Worker processes rebuild the loaders from settings, so only the stock Loaders can use them.
        stock = type(self.loaders) is Loaders
        return Indexer(self.store, self.loaders, self._splitter, self.embeddings, self._tokenizer, self._split_key(),
                       parse_workers=self.settings.loaders.workers if stock else 0,
                       parse_settings=(self.settings.loaders, self.settings.splitter) if stock else None)

    def sync(self, progress: ProgressFn | None = None, origins: dict[str, str] | None = None) -> IngestReport:
        """Index the KB's knowledge folder: new/changed files in, deleted files out."""
        self.knowledge_dir.mkdir(parents=True, exist_ok=True)
        return self._indexer().sync(self.knowledge_dir, self.settings.home, origins, progress)

    def add(self, path: str | Path, progress: ProgressFn | None = None) -> IngestReport:
        """Copy a file or folder into the knowledge folder and index it incrementally.

        Files are copied (not linked) so the index never points at files that move.
        Re-adding the same folder mirrors it: files deleted there since are removed here.
        """
        from kbqa.index import scan_folder, shown_name, unusable_entries

        try:
            src = Path(path).expanduser().resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            raise KbqaError(f"{path}: cannot be resolved ({exc})") from exc
        if not src.exists():
            raise KbqaError(f"{path}: no such file or folder")
        if not (src.is_file() or src.is_dir()):
            raise KbqaError(f"{path}: not a regular file or folder (a pipe, socket or device)")
        kdir = self.knowledge_dir.resolve()
        if src == kdir or kdir in src.parents:
            return self.sync(progress)
        kdir.mkdir(parents=True, exist_ok=True)
        rejected: list[FileResult] = []
        origins: dict[str, str] = {}
        skipped: list[tuple[Path, str]] = []
        sources = [(src.name, src)] if src.is_file() else [
            (p.relative_to(src).as_posix(), p) for p in scan_folder(src, skipped)
        ]
        rejected.extend(unusable_entries(src, skipped, ()))
        for rel, file in sources:
            if not self.loaders.supports(file):
                rejected.append(FileResult(shown_name(rel), "failed",
                                           reason=f"unsupported file type {file.suffix or '(none)'!r}"))
                continue
            dest = kdir / rel
            if not _same_content(file, dest):
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, dest)
            origins[rel] = str(file)
        if src.is_dir():  # mirror deletions made in the origin folder since the last add
            for rec in self.store.files().values():
                if rec.origin and Path(rec.origin).is_relative_to(src) and not Path(rec.origin).exists():
                    (kdir / rec.file).unlink(missing_ok=True)
        report = self.sync(progress, origins)
        report.files.extend(rejected)
        report.files.sort(key=lambda f: f.file)
        return report

    def remove(self, file: str | Path) -> FileResult:
        """Delete one file from the knowledge folder and its chunks from both indexes."""
        name = self._file_name(file)
        records = self.store.files()
        target = self.knowledge_dir / name
        if name not in records and not target.exists():
            raise KbqaError(f"{file}: not a file of knowledge base {self.name!r}")
        target.unlink(missing_ok=True)
        self.store.commit([], [name])
        self.store.flush()
        return FileResult(name, "removed", records[name].n_chunks if name in records else 0)

    def _file_name(self, file: str | Path) -> str:
        """A file's name inside the KB, from that name or a path (absolute or knowledge/<kb>/…)."""
        p = Path(file)
        if p.is_absolute() or p.parts[:1] == ("knowledge",):
            full = (p if p.is_absolute() else self.settings.home / p).resolve()
            if full.is_relative_to(self.knowledge_dir.resolve()):
                return full.relative_to(self.knowledge_dir.resolve()).as_posix()
        return p.as_posix()

    def rebuild(self, progress: ProgressFn | None = None) -> IngestReport:
        """Re-index everything from scratch (e.g. after changing the embedding model).

        The new index is built beside the old one and swapped in at the end, so an
        interrupted rebuild leaves the previous index in place.
        """
        self.close()
        final = self.index_dir
        staging = final.with_name(f".{self.name}.rebuild")
        self._drop_outside_vectors(staging)  # left by an interrupted rebuild
        shutil.rmtree(staging, ignore_errors=True)
        vectors = self._vectors_uri()  # a rebuild keeps the KB's backend (kbqa migrate changes it)
        self._store = self._open_store(staging, vectors)
        try:
            report = self.sync(progress)
        finally:
            self.close()
        old = final.with_name(f".{self.name}.old")
        self._drop_outside_vectors(old)
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        staging.rename(final)  # between the two renames, _recover_swap() finishes the job
        self._drop_outside_vectors(old)  # the replaced index's collection on a Milvus server (or shared file)
        shutil.rmtree(old, ignore_errors=True)
        return report

    def _drop_outside_vectors(self, index_dir: Path) -> None:
        """Drop the Milvus collection of the index in `index_dir` if it lives outside that folder."""
        cfg = self.settings.store
        drop_outside_vectors(index_dir, cfg.vector_uri, self.name, cfg.token)

    def _recover_swap(self) -> None:
        """Finish a rebuild swap cut short between its two renames."""
        old = self.index_dir.with_name(f".{self.name}.old")
        staging = self.index_dir.with_name(f".{self.name}.rebuild")
        if not self.index_dir.exists() and old.exists():
            (staging if (staging / CATALOG_FILE).exists() else old).rename(self.index_dir)

    # -- reading -------------------------------------------------------------------------
    def retriever(self) -> HybridRetriever:
        from kbqa.retriever import HybridRetriever

        return HybridRetriever(self.store, self.embeddings, self._tokenizer, self.settings.retrieval,
                               self.reranker)

    def search(self, query: str, k: int | None = None, min_score: float | None = None) -> list[Source]:
        """Ranked sources for a query (no LLM). Scores are 0–1, higher is more relevant."""
        return self.retriever().search(query, k, min_score)

    def answer_chain(self) -> AnswerChain:
        from kbqa.qa import AnswerChain

        return AnswerChain(self.retriever(), self.llm, self.settings.answer, self.settings.llm, self._tokenizer,
                           self.embeddings)

    def ask(self, question: str, history: History = None, *, k: int | None = None,
            min_score: float | None = None) -> Answer:
        """Answer from the documents with `[n]` citations, or refuse when nothing is relevant.

        `history` is the conversation so far (`{"role", "content"}` dicts or `(question,
        answer)` pairs, oldest first); a follow-up is condensed with it before retrieval.
        `min_score` overrides the refusal threshold `answer.min_score`; `k` the number of sources.
        """
        return self.answer_chain().ask(question, history, k=k, min_score=min_score)

    def ask_stream(self, question: str, history: History = None, *, k: int | None = None,
                   min_score: float | None = None) -> Iterator[str | Retrieved | Answer]:
        """Like `ask`, but yields the text pieces as they are generated, then the final `Answer`.

        When the LLM is called, a `Retrieved` (the sources in its prompt) comes before the first piece.

        The final `Answer.text` is authoritative: it replaces the streamed text when the
        chain fell back to an extractive answer.
        """
        return self.answer_chain().stream(question, history, k=k, min_score=min_score)

    def as_langchain_retriever(self, k: int | None = None) -> KbqaLangchainRetriever:
        from kbqa.langchain_retriever import KbqaLangchainRetriever

        return KbqaLangchainRetriever(retriever=self.retriever(), k=k or self.settings.retrieval.k)

    def files(self) -> list[dict[str, Any]]:
        return [
            {"file": r.file, "status": r.status, "chunks": r.n_chunks, "size": r.size, "sha256": r.sha256,
             "reason": r.reason, "warnings": r.warnings, "indexed_at": r.indexed_at}
            for r in self.store.files().values()
        ]

    def stats(self) -> dict[str, Any]:
        records: Sequence[Any] = list(self.store.files().values())
        disk = sum(p.stat().st_size for p in self.index_dir.rglob("*") if p.is_file())
        return {
            "name": self.name,
            "files": len(records),
            "failed_files": sum(1 for r in records if r.status == "failed"),
            "chunks": self.store.count(),
            "embedding": self.fingerprint()["embedding"],
            "splitter": self.settings.splitter.model_dump(),
            "vectors": self.store.location.uri,
            "index_bytes": disk,
            "knowledge_dir": str(self.knowledge_dir),
            "index_dir": str(self.index_dir),
        }
