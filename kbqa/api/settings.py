"""The `api:` settings section of `kbqa serve` and how the server loads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kbqa.config import APISettings, Settings, load_settings

__all__ = ["APISettings", "api_settings", "load_server_settings"]


def api_settings(settings: Settings, environ: dict[str, str] | None = None) -> APISettings:
    """The API section of `settings` (env `KBQA_API__*` is already applied by `load_settings`)."""
    return settings.api


def load_server_settings(config: str | Path | None = None, home: str | Path | None = None,
                         environ: dict[str, str] | None = None) -> tuple[Settings, APISettings]:
    """Settings for the server: like `load_settings`, returning the API section beside them."""
    overrides: dict[str, Any] = {"home": Path(home)} if home is not None else {}
    settings = load_settings(config, environ, **overrides)
    return settings, settings.api
