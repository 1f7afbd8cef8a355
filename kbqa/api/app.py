"""`create_app`: the FastAPI application behind `kbqa serve`. Thin: every decision is the library's.

Endpoints (OpenAPI at /openapi.json, interactive docs at /docs):

    GET    /api/health                      liveness, no token needed
    GET    /api/kbs                         list knowledge bases
    POST   /api/kbs                         create one {"name"}
    GET    /api/kbs/{kb}                    info (counts, models, folders)
    DELETE /api/kbs/{kb}                    delete it (files and index)
    GET    /api/kbs/{kb}/files              files with status, chunks, failure reason
    POST   /api/kbs/{kb}/files              upload (multipart `files`, .zip too) → indexing job
    DELETE /api/kbs/{kb}/files/{path}       remove a file and its chunks
    POST   /api/kbs/{kb}/reindex            indexing job {"rebuild": false}
    GET    /api/jobs[?kb=]  /api/jobs/{id}  poll jobs: queued/running/done/failed, per-file results
    POST   /api/kbs/{kb}/search             {"query", "k", "min_score"} → {"sources": [...]}
    POST   /api/kbs/{kb}/ask                {"question", "history", "stream"} → answer JSON or SSE
    GET    /v1/models, POST /v1/chat/completions   OpenAI-compatible; `model` = knowledge base
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from kbqa import __version__
from kbqa.config import Settings
from kbqa.embeddings import KbqaEmbeddings
from kbqa.errors import KbqaError
from kbqa.llm import ChatBackend
from kbqa.tokenize import Tokenizer

from .auth import require_token
from .errors import install_error_handlers
from .jobs import JobManager
from .limits import BodyLimitMiddleware
from .openai_compat import openai_router
from .registry import KBRegistry, Resources
from .routes import health_router, kb_router
from .settings import APISettings, api_settings, load_server_settings
from .state import JSON_BODY_LIMIT, ServerState

log = logging.getLogger(__name__)

DESCRIPTION = """Ask a local knowledge base over HTTP: manage knowledge bases and their files, index them as
background jobs, search, and get answers with `[n]` citations — as JSON, as Server-Sent Events, or
through the OpenAI-compatible `/v1/chat/completions` (the `model` is the knowledge base).

When the server has a token (`api.token`, env `KBQA_API__TOKEN`), every route except
`/api/health` and the docs needs `Authorization: Bearer <token>`. Errors are
`{"error": "message"}` (OpenAI's `{"error": {"message", ...}}` under `/v1`).
"""


def _warm_up(resources: Resources) -> None:
    """Load the embedding model and jieba's dictionary now, so the first question waits for neither."""
    try:
        resources.embeddings.warm_up()
    except KbqaError as exc:  # the first request that needs the model reports it properly
        log.warning("could not load the embedding model: %s", exc)
    warm_tokenizer = getattr(resources.tokenizer, "warm_up", None)
    if warm_tokenizer is not None:
        warm_tokenizer()


def create_app(settings: Settings | None = None, api: APISettings | None = None, *,
               embeddings: KbqaEmbeddings | None = None, llm: ChatBackend | None = None,
               loaders: Any = None, tokenizer: Tokenizer | None = None, warm_up: bool = False) -> FastAPI:
    """The API for the knowledge bases under `settings.home`.

    Without arguments, settings come from the environment like the CLI's (`KBQA_HOME`,
    `KBQA_CONFIG`, `KBQA_*`), so `uvicorn --factory kbqa.api:create_app` works. Models may be
    injected (tests); otherwise they are built from the settings once and load on first use, or
    right after start-up in the background with `warm_up` (what `kbqa serve` does).
    """
    if settings is None:
        settings, env_api = load_server_settings()
        api = api or env_api
    api = api or api_settings(settings)
    resources = Resources(settings, embeddings=embeddings, llm=llm, loaders=loaders, tokenizer=tokenizer)
    registry = KBRegistry(resources)
    state = ServerState(settings, api, resources, registry, JobManager(registry, api.jobs_kept))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if warm_up:
            threading.Thread(target=_warm_up, args=(resources,), name="kbqa-warm-up", daemon=True).start()
        yield
        registry.close()

    app = FastAPI(title="kbqa", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.kbqa = state
    install_error_handlers(app)
    guard = [Depends(require_token(api.token))] if api.token else []
    app.include_router(health_router(state))
    app.include_router(kb_router(state), dependencies=guard)
    app.include_router(openai_router(state), dependencies=guard)
    app.add_middleware(BodyLimitMiddleware, json_limit=JSON_BODY_LIMIT,
                       upload_limit=int(api.max_request_mb * (1 << 20)))
    if api.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=api.cors_origins, allow_methods=["*"],
                           allow_headers=["*"], allow_credentials=False)
    return app
