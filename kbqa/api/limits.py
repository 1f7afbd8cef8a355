"""A request-body size limit that answers 413 in the API's JSON error shape.

Checked twice: against `Content-Length` before the app runs, and by counting the bytes that
actually arrive (chunked uploads, lying clients). Uploads get `api.max_request_mb`, every
other route a small JSON limit.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_body

UPLOAD_PATH = re.compile(r"^/api/kbs/[^/]+/files/?$")


class BodyTooLarge(HTTPException):
    """Raised while reading the body; FastAPI re-raises HTTPExceptions, so the error handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the limit of {_mb(limit)}")


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.3g} MB"


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit

    def limit_for(self, scope: Scope) -> int:
        upload = scope.get("method") == "POST" and UPLOAD_PATH.match(scope.get("path", ""))
        return self.upload_limit if upload else self.json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._reject(scope, send, limit)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if started:
                raise
            await self._reject(scope, send, limit)

    @staticmethod
    async def _reject(scope: Scope, send: Send, limit: int) -> None:
        message = f"request body larger than the limit of {_mb(limit)}"
        response = JSONResponse(error_body(scope.get("path", ""), 413, message), status_code=413,
                                headers={"Connection": "close"})

        async def no_body() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        await response(scope, no_body, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
