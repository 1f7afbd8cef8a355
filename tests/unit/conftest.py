"""Unit tests: deterministic fakes, no network."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from kbqa.config import Settings
from kbqa.errors import LoaderError
from kbqa.kb import KnowledgeBase
from kbqa.schema import LoadedFile, Section
from kbqa.testing import FakeEmbeddings


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


@pytest.fixture
def fake_kb(settings: Settings, fake_loaders: FakeLoaders, tmp_path: Path) -> Callable[[dict[str, str]], KnowledgeBase]:
    """Build knowledge base "r" from {file name: text} with the fake loaders and hashing embeddings."""

    def build(docs: dict[str, str]) -> KnowledgeBase:
        src = tmp_path / "src"
        src.mkdir()
        for name, text in docs.items():
            (src / name).write_text(text, encoding="utf-8")
        base = KnowledgeBase.create("r", settings, embeddings=FakeEmbeddings(), loaders=fake_loaders)
        base.add(src)
        return base

    return build
