"""kbqa's own exceptions.

Library code raises these; only the CLI, UI and API turn them into messages.
Every message names the thing at fault (file, setting, knowledge base) and the reason.
"""

from __future__ import annotations

from pathlib import Path


class KbqaError(Exception):
    """Base class of every error kbqa raises on purpose."""


class ConfigError(KbqaError):
    """A setting is missing, malformed or out of range."""


class DependencyMissingError(KbqaError):
    """An optional package is needed for this feature; the message carries the pip hint."""

    def __init__(self, package: str, feature: str, extra: str | None = None) -> None:
        hint = f"pip install 'kbqa[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{feature} needs the package '{package}': {hint}")
        self.package = package


class LoaderError(KbqaError):
    """A file could not be turned into text. Carries the file and a human reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class UnsupportedFileError(LoaderError):
    """No loader is registered for the file's suffix."""


class KnowledgeBaseNotFoundError(KbqaError):
    """The named knowledge base has no index yet."""


class KnowledgeBaseExistsError(KbqaError):
    """create() was asked for a name that already exists."""


class IndexMismatchError(KbqaError):
    """The index on disk was built differently (embedding model, dimension, format)."""


class IndexCorruptError(KbqaError):
    """The index on disk cannot be read; the message says how to rebuild it."""


class EmbeddingError(KbqaError):
    """The embedding model failed to load or to encode."""


class LLMError(KbqaError):
    """The language model could not be loaded or failed to answer (the message says which and why)."""


class UploadError(KbqaError):
    """An upload as a whole cannot be accepted (e.g. the target folder is unusable)."""


class VectorStoreError(KbqaError):
    """The vector backend (a Milvus server or Milvus Lite folder) cannot be reached or refused a call;
    the message names its URI."""


class ModelError(KbqaError):
    """A named model cannot be assembled or verified (a part is missing, of the wrong version or
    damaged); the message names the package and the command that fixes it."""
