"""Helpers shared by the store contract tests (importable from test modules, unlike conftest)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import pytest

from kbqa.store import ChunkStore

BACKENDS = ["faiss", "milvus-lite"]
OpenStore = Callable[..., ChunkStore]


def milvus_missing() -> str | None:
    """Why the Milvus backend cannot run here (None = it can)."""
    for module, package in (("pymilvus", "pymilvus"), ("milvus_lite", "milvus-lite")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (pip install {package})"
    return None


def skip_without_milvus() -> None:
    """Skip the calling test, with the reason, when the Milvus backend cannot run here."""
    reason = milvus_missing()
    if reason:
        pytest.skip(reason)
