"""Indexing jobs: run in a background thread each, one at a time per knowledge base, polled by id.

A job waits (`queued`) for its knowledge base's write lock, then runs (`running`) `sync` or
`rebuild` with a progress callback that records every file's result as it finishes, and ends
`done` (with the index report; files that failed are in it) or `failed` (with the reason).
Jobs live in memory: a restarted server forgets them, but the index itself is resumable — a
job cut short by a crash leaves every committed file in place, and the next job finishes it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from kbqa.errors import KbqaError
from kbqa.schema import FileResult, IngestReport
from kbqa.uploads import UploadResult

from .errors import NotFoundError
from .registry import KBRegistry

log = logging.getLogger(__name__)

JobKind = Literal["sync", "rebuild", "upload"]
JobStatus = Literal["queued", "running", "done", "failed"]


@dataclass
class Job:
    id: str
    kb: str
    kind: JobKind
    status: JobStatus = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    done: int = 0
    total: int | None = None
    current: str = ""
    files: list[FileResult] = field(default_factory=list)
    report: IngestReport | None = None
    error: str | None = None
    uploads: list[UploadResult] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _finished: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    def progress(self, done: int, total: int, result: FileResult) -> None:
        with self._lock:
            self.done, self.total, self.current = done, total, result.file
            self.files.append(result)

    def start(self) -> None:
        with self._lock:
            self.status, self.started_at = "running", time.time()

    def finish(self, report: IngestReport | None, error: str | None = None) -> None:
        with self._lock:
            self.report, self.error = report, error
            self.status = "failed" if error is not None else "done"
            self.finished_at = time.time()
            self.current = ""
            if report is not None:
                self.total = self.done = max(self.done, len(report.files))
        self._finished.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (for tests and scripts); True if it did."""
        return self._finished.wait(timeout)

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "id": self.id, "kb": self.kb, "kind": self.kind, "status": self.status,
                "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at,
                "progress": {"done": self.done, "total": self.total, "current": self.current},
                "files": [asdict(f) for f in self.files],
                "report": self.report.to_json() if self.report is not None else None,
                "error": self.error,
                "uploads": [asdict(u) for u in self.uploads],
            }


class JobManager:
    """Starts jobs and remembers the last `keep` finished ones."""

    def __init__(self, registry: KBRegistry, keep: int = 200) -> None:
        self.registry = registry
        self.keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def submit(self, kb: str, kind: JobKind, uploads: list[UploadResult] | None = None) -> Job:
        self.registry.require(kb)
        job = Job(uuid.uuid4().hex[:16], kb, kind, uploads=list(uploads or []))
        with self._lock:
            self._jobs[job.id] = job
            self._prune()
        threading.Thread(target=self._run, args=(job,), name=f"kbqa-job-{job.id}", daemon=True).start()
        return job

    def _prune(self) -> None:
        finished = [j for j in self._jobs.values() if not j.active]
        for old in finished[: max(0, len(finished) - self.keep)]:
            del self._jobs[old.id]

    def _run(self, job: Job) -> None:
        try:
            with self.registry.writing(job.kb) as kb:
                job.start()
                report = kb.rebuild(job.progress) if job.kind == "rebuild" else kb.sync(job.progress)
        except KbqaError as exc:
            job.finish(None, str(exc))
        except Exception as exc:  # a job thread must always end its job; the bug goes to the log
            log.exception("indexing job %s for %r crashed", job.id, job.kb)
            job.finish(None, f"internal error ({type(exc).__name__}: {exc}); see the server log")
        else:
            job.finish(report)

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id!r} (jobs are kept in memory until the server restarts; "
                                f"the last {self.keep} finished ones are remembered)")
        return job

    def all(self, kb: str | None = None) -> list[Job]:
        with self._lock:
            jobs = list(self._jobs.values())
        return [j for j in jobs if kb is None or j.kb == kb]

    def active(self, kb: str) -> list[Job]:
        return [j for j in self.all(kb) if j.active]
