"""How errors become HTTP responses: kbqa errors → 4xx `{"error": message}`, never a 500 for bad input.

The `/v1/*` (OpenAI-compatible) routes answer in OpenAI's error shape instead,
`{"error": {"message", "type", "code"}}`, because OpenAI clients read `error.message`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kbqa.errors import (
    ConfigError,
    DependencyMissingError,
    EmbeddingError,
    IndexCorruptError,
    IndexMismatchError,
    KbqaError,
    KnowledgeBaseExistsError,
    KnowledgeBaseNotFoundError,
    LLMError,
    UploadError,
)

log = logging.getLogger(__name__)


class NotFoundError(KbqaError):
    """A file, job or route that does not exist (404)."""


class ConflictError(KbqaError):
    """The request clashes with the knowledge base's state, e.g. an indexing job is running (409)."""


class PayloadTooLargeError(KbqaError):
    """Every uploaded file was over the size limit (413)."""

    def __init__(self, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.body = body or {}


class BadUploadError(KbqaError):
    """No uploaded file could be saved (400); `body` carries the per-file results."""

    def __init__(self, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.body = body or {}


# Most specific first: the first matching class decides the status.
_STATUS: list[tuple[type[KbqaError], int]] = [
    (KnowledgeBaseNotFoundError, 404),
    (NotFoundError, 404),
    (KnowledgeBaseExistsError, 409),
    (ConflictError, 409),
    (IndexMismatchError, 409),
    (IndexCorruptError, 409),
    (PayloadTooLargeError, 413),
    (LLMError, 503),
    (EmbeddingError, 503),
    (DependencyMissingError, 503),
    (ConfigError, 400),
    (UploadError, 400),
    (KbqaError, 400),
]


def status_for(exc: KbqaError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 400  # pragma: no cover - KbqaError is last in the table


def _openai_path(path: str) -> bool:
    return path.startswith("/v1/")


_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                 409: "conflict_error", 413: "invalid_request_error", 422: "invalid_request_error",
                 503: "server_error"}


def error_body(path: str, status: int, message: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    if _openai_path(path):
        code = "model_not_found" if status == 404 else None
        return {"error": {"message": message, "type": _OPENAI_TYPES.get(status, "api_error"), "param": None,
                          "code": code}}
    return {"error": message, **(extra or {})}


def error_response(request: Request, status: int, message: str, extra: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(request.url.path, status, message, extra), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KbqaError)
    async def _kbqa(request: Request, exc: KbqaError) -> JSONResponse:
        extra = getattr(exc, "body", None)
        return error_response(request, status_for(exc), str(exc), extra if isinstance(extra, dict) else None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        parts = []
        for e in errors[:5]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "request"
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        message = "invalid request: " + "; ".join(parts)
        return error_response(request, 422, message, {"detail": jsonable_encoder(errors, custom_encoder={
            Exception: str, bytes: lambda b: b.decode("utf-8", "replace")})})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return error_response(request, exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - a bug, logged
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return error_response(request, 500, f"internal error ({type(exc).__name__}); see the server log")
