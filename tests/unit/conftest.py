"""Unit tests: deterministic fakes, no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbqa.errors import LoaderError
from kbqa.schema import LoadedFile, Section


@pytest.fixture(autouse=True)
def _block_network(no_network: None) -> None:
    """Every unit test runs with the network blocked."""


class FakeLoaders:
    """Reads .txt files as UTF-8, one section per form-feed-separated 'page'; counts loads."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def supports(self, path: Path) -> bool:
        return path.suffix in (".txt", ".pdf")

    def load(self, path: Path) -> LoadedFile:
        self.loaded.append(path.name)
        data = path.read_bytes()
        if not data:
            raise LoaderError(path, "empty file")
        if b"\x00" in data:
            raise LoaderError(path, "looks like binary data, not text")
        pages = data.decode("utf-8").split("\f")
        return LoadedFile([Section(p, i + 1 if len(pages) > 1 else None, "") for i, p in enumerate(pages)])


@pytest.fixture
def fake_loaders() -> FakeLoaders:
    return FakeLoaders()
