"""kbqa: local knowledge-base question answering with cited sources."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kbqa.config import Settings, load_settings
from kbqa.errors import KbqaError

if TYPE_CHECKING:
    from kbqa.kb import KnowledgeBase
    from kbqa.schema import Answer, Source

__all__ = ["Answer", "KbqaError", "KnowledgeBase", "Settings", "Source", "load_settings"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazy: `import kbqa` stays cheap (the CLI's --help, config tools); the library loads on use.
    if name == "KnowledgeBase":
        from kbqa.kb import KnowledgeBase

        return KnowledgeBase
    if name in ("Answer", "Source"):
        from kbqa import schema

        return getattr(schema, name)
    raise AttributeError(f"module 'kbqa' has no attribute {name!r}")
