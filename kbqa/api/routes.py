"""The kbqa-native endpoints under /api: knowledge bases, files, indexing jobs, search and ask."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, File, Path, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from kbqa import __version__
from kbqa.errors import KbqaError
from kbqa.schema import Answer, Retrieved
from kbqa.uploads import UploadLimits, save_uploads

from .errors import BadUploadError, ConflictError, NotFoundError, PayloadTooLargeError
from .models import (
    AnswerOut,
    AskIn,
    Deleted,
    ErrorOut,
    FileList,
    FileResultOut,
    Health,
    JobList,
    JobOut,
    KBCreate,
    KBInfo,
    KBList,
    ReindexIn,
    SearchIn,
    SearchOut,
    UploadOut,
    clean_text,
)
from .state import LOCK_WAIT_S, ServerState
from .streaming import SSE_HEADERS, first_item, sse_event, stream_from_thread

KbPath = Annotated[str, Path(description="The knowledge base.", examples=["manuals"])]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Bad input (e.g. an invalid name)."},
    401: {"model": ErrorOut, "description": "Missing or wrong bearer token (only when api.token is set)."},
    404: {"model": ErrorOut, "description": "No such knowledge base, file or job."},
}


def health_router(state: ServerState) -> APIRouter:
    router = APIRouter(tags=["server"])

    @router.get("/api/health", response_model=Health, summary="Liveness (never needs the token)")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "auth": bool(state.api.token)}

    return router


def kb_router(state: ServerState) -> APIRouter:
    """Routes under /api; the caller adds authentication."""
    router = APIRouter(prefix="/api", responses=_ERRORS)
    reg, jobs = state.registry, state.jobs

    # -- knowledge bases ------------------------------------------------------------------
    @router.get("/kbs", response_model=KBList, tags=["knowledge bases"], summary="List knowledge bases")
    def list_kbs() -> dict[str, Any]:
        return {"knowledge_bases": [{"name": n} for n in reg.names()]}

    @router.post("/kbs", status_code=201, response_model=KBInfo, tags=["knowledge bases"],
                 summary="Create an empty knowledge base", responses={409: {"model": ErrorOut}})
    def create_kb(body: KBCreate) -> dict[str, Any]:
        reg.create(body.name)
        with reg.reading(body.name) as kb:
            return kb.stats()

    @router.get("/kbs/{kb}", response_model=KBInfo, tags=["knowledge bases"],
                summary="A knowledge base's counts, models and folders")
    def kb_info(kb: KbPath) -> dict[str, Any]:
        with reg.reading(kb) as base:
            return base.stats()

    @router.delete("/kbs/{kb}", response_model=Deleted, tags=["knowledge bases"],
                   summary="Delete a knowledge base: its files and its index",
                   responses={409: {"model": ErrorOut, "description": "An indexing job is running."}})
    def delete_kb(kb: KbPath) -> dict[str, Any]:
        reg.require(kb)
        if active := jobs.active(kb):
            raise ConflictError(f"knowledge base {kb!r} has indexing job {active[0].id} {active[0].status}; "
                                "delete it when the job is done")
        reg.delete(kb, timeout=LOCK_WAIT_S)
        return {"deleted": kb}

    # -- files ----------------------------------------------------------------------------
    @router.get("/kbs/{kb}/files", response_model=FileList, tags=["files"],
                summary="Indexed files with status, chunk count and failure reason")
    def list_files(kb: KbPath) -> dict[str, Any]:
        with reg.reading(kb) as base:
            return {"files": base.files()}

    @router.post(
        "/kbs/{kb}/files", status_code=202, response_model=UploadOut, tags=["files"],
        summary="Upload files (or .zip archives) and index them",
        description="Multipart field `files`, repeated. Names are sanitised and nothing is written outside the "
                    "knowledge base (like the browser app); each file is saved or rejected with a reason; "
                    "limits from `ui.max_upload_mb` / `ui.max_upload_files`. With `index=true` (default) an "
                    "indexing job starts: poll it at /api/jobs/{id}.",
        responses={413: {"model": ErrorOut, "description": "Every file was over the size limit."}},
    )
    def upload(kb: KbPath,
               # `| str`: a part sent without a file name arrives as text; it is rejected on its own
               # ("no usable file name") instead of failing the whole request with a 422.
               files: Annotated[list[UploadFile | str], File(description="The files to add.")],
               index: Annotated[bool, Query(description="Start an indexing job for them.")] = True
               ) -> JSONResponse:
        reg.require(kb)
        ui = state.settings.ui
        limits = UploadLimits.from_mb(ui.max_upload_mb, ui.max_upload_files)
        target = state.settings.knowledge_dir / kb
        parts = (("", f.encode()) if isinstance(f, str) else (f.filename or "", f.file) for f in files)
        report = save_uploads(parts, target, state.resources.supports, limits)
        results = [_upload_json(r) for r in report.results]
        if not report.saved:
            reasons = "; ".join(f"{r.name}: {r.reason}" for r in report.rejected[:5]) or "no files were sent"
            if report.rejected and all("upload limit" in r.reason for r in report.rejected):
                raise PayloadTooLargeError(f"no file was saved: {reasons}", {"uploads": results})
            raise BadUploadError(f"no file was saved: {reasons}", {"uploads": results})
        job = jobs.submit(kb, "upload", report.results).to_json() if index else None
        return JSONResponse({"uploads": results, "job": job}, status_code=202 if index else 200)

    @router.delete("/kbs/{kb}/files/{file:path}", response_model=FileResultOut, tags=["files"],
                   summary="Remove a file and all its chunks",
                   responses={409: {"model": ErrorOut, "description": "An indexing job is running."}})
    def delete_file(kb: KbPath, file: str) -> dict[str, Any]:
        name = _file_name(file)
        with reg.writing(kb, timeout=LOCK_WAIT_S) as base:
            if name not in base.store.files() and not (base.knowledge_dir / name).is_file():
                raise NotFoundError(f"{name}: not a file of knowledge base {kb!r}")
            result = base.remove(name)
        return {"file": result.file, "status": result.status, "chunks": result.chunks, "reason": result.reason,
                "warnings": result.warnings}

    @router.post("/kbs/{kb}/reindex", status_code=202, response_model=JobOut, tags=["jobs"],
                 summary="Index the knowledge folder again (only new/changed files), or rebuild")
    def reindex(kb: KbPath, body: ReindexIn | None = None) -> dict[str, Any]:
        return jobs.submit(kb, "rebuild" if body is not None and body.rebuild else "sync").to_json()

    # -- jobs -----------------------------------------------------------------------------
    @router.get("/jobs", response_model=JobList, tags=["jobs"], summary="Indexing jobs, oldest first")
    def list_jobs(kb: Annotated[str | None, Query(description="Only this knowledge base's jobs.")] = None
                  ) -> dict[str, Any]:
        return {"jobs": [j.to_json() for j in jobs.all(kb)]}

    @router.get("/jobs/{job_id}", response_model=JobOut, tags=["jobs"], summary="One job: status and progress")
    def get_job(job_id: str) -> dict[str, Any]:
        return jobs.get(job_id).to_json()

    # -- search and ask -------------------------------------------------------------------
    @router.post("/kbs/{kb}/search", response_model=SearchOut, tags=["questions"],
                 summary="Ranked passages for a query (no LLM); scores 0-1")
    def search(kb: KbPath, body: SearchIn) -> dict[str, Any]:
        with reg.reading(kb) as base:
            return {"sources": [s.to_json() for s in base.search(body.query, body.k, body.min_score)]}

    @router.post(
        "/kbs/{kb}/ask", response_model=AnswerOut, tags=["questions"],
        summary="Answer a question with [n] citations (JSON, or Server-Sent Events with stream=true)",
        description="JSON: the `kbqa ask --json` shape. With `stream: true`: `text/event-stream` of `token` events "
                    "(`{\"text\": piece}`), then one `answer` event with that JSON, whose `answer` is "
                    "authoritative (it may differ from the streamed text, e.g. when citations were added), or "
                    "an `error` event (`{\"error\": message}`).",
        responses={200: {"content": {"text/event-stream": {}}}, 503: {"model": ErrorOut,
                                                                     "description": "The model failed."}},
    )
    async def ask(kb: KbPath, body: AskIn) -> Any:
        history = [{"role": t.role, "content": t.content} for t in body.history if t.role != "system"]
        if not body.stream:
            def run() -> dict[str, Any]:
                with reg.reading(kb) as base:
                    return base.ask(body.question, history, k=body.k, min_score=body.min_score
                                    ).to_json(extended=body.explain)
            return JSONResponse(await run_in_threadpool(run))

        reg.require(kb)

        def produce() -> Iterator[str | Retrieved | Answer]:
            with reg.reading(kb) as base:
                yield from base.ask_stream(body.question, history, k=body.k, min_score=body.min_score)

        items = stream_from_thread(produce)
        first = await first_item(items)  # errors before the first piece are plain HTTP errors

        async def events() -> AsyncIterator[str]:
            try:
                item: str | Retrieved | Answer = first
                while True:
                    if isinstance(item, Answer):
                        yield sse_event("answer", item.to_json(extended=body.explain))
                        return
                    if isinstance(item, Retrieved):  # before the first token: what the answer is read from
                        yield sse_event("sources", {"sources": [s.to_json() for s in item.sources]})
                    else:
                        yield sse_event("token", {"text": item})
                    item = await anext(items)
            except KbqaError as exc:
                yield sse_event("error", {"error": str(exc)})
            except StopAsyncIteration:
                yield sse_event("error", {"error": "the answer chain ended without an answer"})
            finally:
                await items.aclose()

        return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)

    return router


def _upload_json(r: Any) -> dict[str, Any]:
    return {"name": r.name, "status": r.status, "saved_as": r.saved_as, "reason": r.reason, "size": r.size}


def _file_name(file: str) -> str:
    """A file's name inside a knowledge base, from the URL; never leads outside it."""
    name = clean_text(file).strip()
    parts = PurePosixPath(name).parts
    if not name or name.startswith("/") or ".." in parts or "\\" in name:
        raise KbqaError(f"{file!r}: give the file's path inside the knowledge base, e.g. 'guide.pdf' or 'sub/a.md'")
    return PurePosixPath(*parts).as_posix()
