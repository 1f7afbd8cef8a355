"""The `api:` settings section of `kbqa serve`, and how the server finds them.

`APISettings` is meant to live in `kbqa.config` as `Settings.api`; until it does, `api_settings`
falls back to defaults plus the `KBQA_API__*` environment variables, and `load_server_settings`
keeps those variables away from the strict `Settings` model (which rejects unknown sections).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kbqa.config import Settings, load_settings
from kbqa.errors import ConfigError

ENV_PREFIX = "KBQA_API__"


class APISettings(BaseModel):
    """REST API (`kbqa serve`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    token: str = ""
    """Bearer token every request must carry (`Authorization: Bearer …`); required whenever host is
    not a loopback address. Env: KBQA_API__TOKEN."""
    cors_origins: list[str] = Field(default_factory=list)
    """Browser origins allowed to call the API (e.g. ['http://localhost:3000']); empty = CORS off."""
    max_request_mb: float = Field(default=1024.0, gt=0)
    """Largest upload request body; each file in it is also held to ui.max_upload_mb / ui.max_upload_files."""
    jobs_kept: int = Field(default=200, ge=1)
    """Finished indexing jobs remembered for polling (oldest forgotten first; jobs live in memory only)."""


def _has_api_section() -> bool:
    return "api" in Settings.model_fields


def api_settings(settings: Settings, environ: dict[str, str] | None = None) -> APISettings:
    """`settings.api` when `Settings` has that section, else defaults overridden by `KBQA_API__*`."""
    section = getattr(settings, "api", None)
    if isinstance(section, BaseModel):
        return APISettings.model_validate(section.model_dump())
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    for name, value in env.items():
        if name.startswith(ENV_PREFIX):
            data[name[len(ENV_PREFIX):].lower()] = yaml.safe_load(value) if value else value
    try:
        return APISettings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"api.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid API settings from the environment: {problems}") from exc


def load_server_settings(config: str | Path | None = None, home: str | Path | None = None,
                         environ: dict[str, str] | None = None) -> tuple[Settings, APISettings]:
    """Settings for the server: like `load_settings`, plus the API section."""
    env = dict(os.environ if environ is None else environ)
    overrides: dict[str, Any] = {"home": Path(home)} if home is not None else {}
    if _has_api_section():
        settings = load_settings(config, env, **overrides)
        return settings, api_settings(settings, env)
    core_env = {k: v for k, v in env.items() if not k.startswith(ENV_PREFIX)}
    settings = load_settings(config, core_env, **overrides)
    return settings, api_settings(settings, env)
