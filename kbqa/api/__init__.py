"""The REST API of `kbqa serve` (FastAPI): see `kbqa.api.app` for the endpoints."""

from __future__ import annotations

from .app import create_app
from .settings import APISettings, load_server_settings

__all__ = ["APISettings", "create_app", "load_server_settings"]
