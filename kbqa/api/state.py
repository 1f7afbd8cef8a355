"""Everything one server process holds, passed to the route factories."""

from __future__ import annotations

from dataclasses import dataclass

from kbqa.config import Settings

from .jobs import JobManager
from .registry import KBRegistry, Resources
from .settings import APISettings

JSON_BODY_LIMIT = 8 << 20
"""Largest JSON request body (questions with their history); uploads have `api.max_request_mb`."""
LOCK_WAIT_S = 10.0
"""How long removing a file or a knowledge base waits for a running indexing job before answering 409."""


@dataclass
class ServerState:
    settings: Settings
    api: APISettings
    resources: Resources
    registry: KBRegistry
    jobs: JobManager
