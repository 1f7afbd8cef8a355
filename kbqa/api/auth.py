"""Bearer-token authentication: required on every route whenever `api.token` is set."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_scheme = HTTPBearer(auto_error=False, scheme_name="token",
                     description="The server's api.token (env KBQA_API__TOKEN), as `Authorization: Bearer <token>`.")

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_scheme)]


def require_token(token: str) -> Callable[[HTTPAuthorizationCredentials | None], Awaitable[None]]:
    """A dependency that rejects requests without `Authorization: Bearer <token>` (401)."""
    expected = token.encode("utf-8")

    async def check(credentials: Credentials) -> None:
        given = credentials.credentials.encode("utf-8", "replace") if credentials is not None else b""
        if credentials is None or not hmac.compare_digest(given, expected):
            reason = "missing" if credentials is None else "wrong"
            raise HTTPException(status_code=401, detail=f"{reason} bearer token: send 'Authorization: Bearer "
                                                        "<token>' with the server's api.token",
                                headers={"WWW-Authenticate": "Bearer"})

    return check
