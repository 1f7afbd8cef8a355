"""kbqa: local knowledge-base question answering with cited sources."""

from kbqa.config import Settings, load_settings
from kbqa.errors import KbqaError

__all__ = ["KbqaError", "Settings", "load_settings"]
__version__ = "0.1.0"
