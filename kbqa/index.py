"""Incremental indexing of a knowledge folder into a `ChunkStore`.

One pass: scan the folder, hash every file, and compare with the catalog:
unchanged files cost a stat + sha256 and nothing else; new or changed files are
loaded and split ahead of the encoder (in a background thread, or in a pool of
parser processes: `loaders.workers`, see `auto_workers`) while the main thread, the
only writer, embeds and commits them in waves (one SQLite transaction per wave).
Files gone from the folder are removed from both indexes. A kill -9 at any moment
leaves the last committed wave (the FAISS file, derived, is rebuilt from the catalog
when older); a rerun skips what was committed and finishes the rest, and parser
processes exit when their indexer dies (tests/reliability/test_kill_points.py).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kbqa.config import LoaderSettings, SplitterSettings
from kbqa.embeddings import KbqaEmbeddings
from kbqa.errors import LoaderError
from kbqa.loaders import Loaders
from kbqa.schema import Chunk, FileResult, FileStatus, IngestReport
from kbqa.splitter import ChineseRecursiveSplitter
from kbqa.store import ChunkStore, FileRecord, FileWrite
from kbqa.tokenize import Tokenizer

log = logging.getLogger(__name__)

IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini", ".ds_store"})
WAVE_CHUNKS = 2048
"""Chunks embedded per wave: big enough for efficient batches, small enough that a
kill loses little work (each wave is committed). 512 measured 20 % slower here."""
ENCODE_CHUNKS = 256
"""Chunks handed to the encoder at once: starts encoding before a whole wave is parsed."""
MIN_FILES_FOR_PROCESSES = 4
"""Below this many files to parse, starting worker processes costs more than it saves."""
HEAVY_SUFFIXES = frozenset({".pdf", ".docx", ".pptx", ".xlsx"})
"""Formats whose parsing (PDF text layers, OCR, Office XML) is slow enough to pay for a process."""
MIN_HEAVY_FOR_AUTO = 8
"""`loaders.workers: auto` starts the pool only when at least this many such files are to be parsed."""
MIN_CPUS_FOR_AUTO = 4
"""... and only with at least this many usable cores (on 2 the pool measured slower: see `auto_workers`)."""

ProgressFn = Callable[[int, int, FileResult], None]
"""Called after each file with (files done, files total, that file's result)."""


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def auto_workers(paths: list[Path], cpus: int | None = None) -> int:
    """How many parser processes `loaders.workers: auto` uses for these files (0 = one thread).

    A process pays off only where parsing is heavy (PDF, OCR, Office) *and* there are cores
    to spare beside the encoder, which keeps the cores busy while the thread parses. On 2
    cores (benchmarks/bench_ingest.py, results/ingest.json) parsing alone was no faster in
    processes: one-page PDFs 0.74-1.1x, small text files 0.34-0.71x, OCR 0.39x of the thread:
    starting workers (each loading jieba / the OCR model) and shipping results cost more than
    the GIL saves; 2,000-file builds with the default encoder were no faster either (one
    worker 0.67-0.84x; two 0.78-1.3x, within the noise of a shared machine). So below 4
    cores `auto` keeps the thread; with more, half the cores parse (one process per 8 heavy
    files, at most 8): reasoned, not measured here.
    """
    cpus = usable_cpus() if cpus is None else cpus
    heavy = sum(p.suffix.lower() in HEAVY_SUFFIXES for p in paths)
    if cpus < MIN_CPUS_FOR_AUTO or heavy < MIN_HEAVY_FOR_AUTO:
        return 0
    return min(cpus // 2, heavy // MIN_HEAVY_FOR_AUTO, 8)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def scan_folder(root: Path, skipped: list[tuple[Path, str]] | None = None) -> Iterator[Path]:
    """Every regular file under root, sorted, skipping hidden/system files and symlinked dirs.

    Entries that are not regular files (links leading nowhere or in a loop, pipes, sockets,
    devices) are never opened; with `skipped` given, each is appended there with the reason.
    """
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith((".", "~$")) or name.lower() in IGNORED_NAMES:
                continue
            path = Path(dirpath) / name
            if path.is_file():
                yield path
            elif skipped is not None:
                skipped.append((path, _not_a_file_reason(path)))


def _not_a_file_reason(path: Path) -> str:
    if path.is_symlink():
        return "a symbolic link that leads nowhere (broken, or a loop); not followed"
    return "not a regular file (a pipe, socket or device); not opened"


def _utf8_name(name: str) -> bool:
    """False for a name holding bytes that are not UTF-8 (os.fsdecode turned them into lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_name(name: str) -> str:
    """A file name as text that can always be printed and stored (undecodable bytes become U+FFFD)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def unusable_entries(root: Path, skipped: list[tuple[Path, str]], names: Iterable[str]) -> list[FileResult]:
    """Failed results for what a folder scan cannot index: non-files, and names that are not UTF-8."""
    out = [FileResult(shown_name(p.relative_to(root).as_posix()), "failed", reason=why) for p, why in skipped]
    out += [FileResult(shown_name(n), "failed", reason="the file name is not valid UTF-8 (written in another "
                       "encoding); rename the file to index it") for n in names if not _utf8_name(n)]
    return out


def embed_text(heading: str, text: str) -> str:
    """What is embedded for a chunk: its heading path gives short chunks their context."""
    return f"{heading}\n{text}" if heading else text


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(slots=True)
class _Prepared:
    record: FileRecord
    result: FileResult
    chunks: list[Chunk] = field(default_factory=list)
    terms: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    vectors: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class _Tools:
    loaders: Loaders
    splitter: ChineseRecursiveSplitter
    tokenizer: Tokenizer


_Job = tuple[str, Path, FileRecord, Path, FileStatus]
_WORKER_TOOLS: list[_Tools] = []
"""The parsing tools of a worker process, built once by `_init_worker` (process-local)."""


def _init_worker(loader_settings: LoaderSettings, splitter_settings: SplitterSettings) -> None:
    _exit_with_parent()
    _WORKER_TOOLS[:] = [_Tools(Loaders(loader_settings), ChineseRecursiveSplitter(splitter_settings), Tokenizer())]


def _exit_with_parent() -> None:
    """End this worker as soon as the indexing process is gone.

    A pool worker blocks reading its job queue, whose pipe it holds both ends of, so it
    never sees EOF: after a kill -9 of the indexer it would wait forever (holding the OCR
    model's memory and the terminal's stdout). The parent sentinel does signal the death.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="kbqa-parent-watch", daemon=True).start()


def _prepare_in_worker(job: _Job) -> _Prepared:
    return prepare_file(_WORKER_TOOLS[0], *job)


def prepare_file(tools: _Tools, name: str, path: Path, record: FileRecord, home: Path, status: FileStatus
                 ) -> _Prepared:
    """Load, split and tokenize one file; a file that cannot be read becomes a failed result."""
    try:
        loaded = tools.loaders.load(path)
        try:
            display_path = path.resolve().relative_to(home.resolve()).as_posix()
        except ValueError:
            display_path = str(path)
        chunks = tools.splitter.split(loaded.sections, name, display_path)
        if not chunks:
            raise LoaderError(path, "no text found in the file")
    except LoaderError as exc:
        record.status, record.reason = "failed", exc.reason
        return _Prepared(record, FileResult(name, "failed", reason=exc.reason))
    except Exception as exc:  # a library bug on one file must not stop the folder
        log.debug("unexpected error loading %s", path, exc_info=True)
        reason = f"unexpected {type(exc).__name__}: {exc}"
        record.status, record.reason = "failed", reason
        return _Prepared(record, FileResult(name, "failed", reason=reason))
    record.warnings = list(loaded.warnings)
    record.n_chunks = len(chunks)
    return _Prepared(
        record,
        FileResult(name, status, len(chunks), warnings=list(loaded.warnings)),
        chunks,
        [" ".join(tools.tokenizer.terms(f"{c.heading} {c.text}" if c.heading else c.text)) for c in chunks],
        texts := [embed_text(c.heading, c.text) for c in chunks],
        [text_key(t) for t in texts],
    )


class Indexer:
    """Brings a store in line with a folder. Collaborators are injected."""

    def __init__(
        self,
        store: ChunkStore,
        loaders: Loaders,
        splitter: ChineseRecursiveSplitter,
        embeddings: KbqaEmbeddings,
        tokenizer: Tokenizer,
        split_key: str,
        parse_workers: int | str = 0,
        parse_settings: tuple[LoaderSettings, SplitterSettings] | None = None,
    ) -> None:
        self.store = store
        self.loaders = loaders
        self.splitter = splitter
        self.embeddings = embeddings
        self.tokenizer = tokenizer
        self.split_key = split_key
        self.parse_workers = parse_workers
        self.parse_settings = parse_settings

    def sync(
        self,
        root: Path,
        home: Path,
        origins: dict[str, str] | None = None,
        progress: ProgressFn | None = None,
    ) -> IngestReport:
        """Index `root` (a KB's knowledge folder) incrementally; paths are reported relative to `home`."""
        started = time.perf_counter()
        report = IngestReport()
        known = self.store.files()
        skipped: list[tuple[Path, str]] = []
        paths = list(scan_folder(root, skipped)) if root.is_dir() else []
        names = {p.relative_to(root).as_posix(): p for p in paths}
        # SQLite, JSON and terminals need UTF-8 names: report the others instead of failing the run.
        report.files.extend(unusable_entries(root, skipped, names))
        names = {n: p for n, p in names.items() if _utf8_name(n)}
        removed = sorted(set(known) - set(names))
        todo: list[tuple[str, Path, FileRecord]] = []
        total = len(names)
        done = 0
        for name, path in names.items():
            st = path.stat()
            old = known.get(name)
            # Like git: an unchanged size and mtime means unchanged content, skip hashing.
            same_stat = old is not None and old.size == st.st_size and old.mtime == st.st_mtime
            sha = old.sha256 if same_stat and old is not None else sha256_file(path)
            record = FileRecord(
                file=name, sha256=sha, size=st.st_size, mtime=st.st_mtime,
                origin=(origins or {}).get(name, old.origin if old else None), split_key=self.split_key,
            )
            if old is not None and old.sha256 == sha and old.split_key == self.split_key:
                status: FileStatus = "failed" if old.status == "failed" else "unchanged"
                result = FileResult(name, status, old.n_chunks, old.reason, old.warnings)
                report.files.append(result)
                done += 1
                if progress:
                    progress(done, total, result)
                continue
            todo.append((name, path, record))
        if removed:
            self.store.commit([], removed)
            report.files.extend(FileResult(name, "removed") for name in removed)
        try:
            for prepared in self._embed_waves(self._prepare_all(todo, home, known), report):
                done += 1
                if progress:
                    progress(done, total, prepared.result)
        finally:
            self.store.flush()
        report.files.sort(key=lambda f: f.file)
        report.seconds = time.perf_counter() - started
        return report

    # -- stages ----------------------------------------------------------------------
    def _prepare_all(self, todo: list[tuple[str, Path, FileRecord]], home: Path, known: dict[str, FileRecord]
                     ) -> Iterator[_Prepared]:
        """Load + split + tokenize ahead of the embedder, yielding files in order.

        With `parse_workers` > 0 (and picklable loader settings) parsing runs in worker
        processes, so its Python work does not fight the encoder for the GIL; otherwise
        in one background thread.
        """
        jobs: list[_Job] = [(name, path, record, home, "updated" if name in known else "added")
                            for name, path, record in todo]
        if not jobs:
            return
        workers = self.workers_for(todo)
        if workers > 0:
            yield from self._prepare_in_processes(jobs, workers)
        else:
            yield from self._prepare_in_thread(jobs)

    def workers_for(self, todo: list[tuple[str, Path, FileRecord]]) -> int:
        """Parser processes a parse of `todo` gets: `parse_workers`, or the `auto` rule; 0 = a thread."""
        if self.parse_settings is None or len(todo) < MIN_FILES_FOR_PROCESSES:
            return 0
        if self.parse_workers == "auto":
            return auto_workers([path for _, path, _ in todo])
        return int(self.parse_workers)

    def _prepare_in_processes(self, jobs: list[_Job], workers: int) -> Iterator[_Prepared]:
        """Parse in `spawn`ed workers (never fork a process whose torch/onnx threads hold locks).

        A spawned worker re-imports the caller's main module; a script without an
        `if __name__ == "__main__":` guard breaks the pool. Then the remaining files are
        parsed in a thread instead, with a warning, rather than failing the build.
        """
        assert self.parse_settings is not None
        ctx = multiprocessing.get_context("spawn")
        done = 0
        try:
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=self.parse_settings) as pool:
                pending: deque[Future[_Prepared]] = deque()
                try:
                    for job in jobs:
                        pending.append(pool.submit(_prepare_in_worker, job))
                        if len(pending) >= 2 * workers + 2:  # bounded read-ahead
                            yield pending.popleft().result()
                            done += 1
                    while pending:
                        yield pending.popleft().result()
                        done += 1
                finally:
                    for fut in pending:
                        fut.cancel()
        except BrokenProcessPool as exc:
            log.warning("parser worker processes failed (%s); parsing in a thread instead. In a script, call "
                        "kbqa under `if __name__ == '__main__':` or set loaders.workers: 0", exc)
            yield from self._prepare_in_thread(jobs[done:])

    def _prepare_in_thread(self, jobs: list[_Job]) -> Iterator[_Prepared]:
        q: queue.Queue[_Prepared | BaseException | None] = queue.Queue(maxsize=4)
        stop = threading.Event()
        tools = _Tools(self.loaders, self.splitter, self.tokenizer)

        def work() -> None:
            try:
                for job in jobs:
                    if stop.is_set():
                        return
                    q.put(prepare_file(tools, *job))
                q.put(None)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                q.put(exc)

        thread = threading.Thread(target=work, name="kbqa-loader", daemon=True)
        thread.start()
        try:
            while (item := q.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # drain so the producer can finish its current put
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(0.05)

    def _embed_waves(self, prepared: Iterator[_Prepared], report: IngestReport) -> Iterator[_Prepared]:
        """Encode in batches of ~ENCODE_CHUNKS as files arrive (so the encoder starts early),
        commit in waves of ~WAVE_CHUNKS (so commits stay few and large)."""
        wave: list[_Prepared] = []
        encoded = 0  # files of `wave` whose vectors are ready
        pending = done = 0  # chunks not yet encoded / encoded in this wave
        for item in prepared:
            wave.append(item)
            pending += len(item.chunks)
            if pending >= ENCODE_CHUNKS:
                self._encode(wave[encoded:], report)
                encoded, done, pending = len(wave), done + pending, 0
            if done >= WAVE_CHUNKS:
                yield from self._commit(wave[:encoded], report)
                wave, encoded, done = wave[encoded:], 0, 0
        if wave:
            self._encode(wave[encoded:], report)
            yield from self._commit(wave, report)

    def _encode(self, items: list[_Prepared], report: IngestReport) -> None:
        """Fill `item.vectors`, reusing stored vectors of identical chunk texts."""
        keys = [k for item in items for k in item.keys]
        reuse = self.store.catalog.vectors_for_keys(sorted(set(keys)), self.store.dimension)
        need = {k: t for item in items for k, t in zip(item.keys, item.texts, strict=True) if k not in reuse}
        if need:
            new_keys = list(need)
            reuse.update(zip(new_keys, self.embeddings.encode([need[k] for k in new_keys]), strict=True))
            report.chunks_embedded += len(new_keys)
        for item in items:
            item.vectors = np.stack([reuse[k] for k in item.keys]) if item.keys else None

    def _commit(self, wave: list[_Prepared], report: IngestReport) -> list[_Prepared]:
        self.store.commit([FileWrite(i.record, i.chunks, i.vectors, i.terms, i.keys) for i in wave])
        report.files.extend(item.result for item in wave)
        return wave
