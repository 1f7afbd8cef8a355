"""Chinese-aware recursive splitting of loaded sections into chunks.

Built on langchain's `RecursiveCharacterTextSplitter`; what we add is the separator
ladder for Chinese (paragraph → line → 。！？ → ；， → space), offsets back into the
section text, the heading/page carried on every chunk, and stable content-hash ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

from kbqa.config import SplitterSettings
from kbqa.schema import Chunk, Section

# Sentence ends first, then clause marks, then spaces; "" is the last resort (hard cut).
SEPARATORS: list[str] = [
    "\n\n",
    "\n",
    "。",
    "！",
    "？",
    "! ",
    "? ",
    ". ",
    "；",
    "; ",
    "，",
    ", ",
    "、",
    " ",
    "",
]

# langchain's last-resort "" separator explodes a text into single characters; for a
# huge run without separators that costs memory quadratic-ish in practice, so long
# section texts are fed to the splitter in windows of this many characters.
_WINDOW = 100_000


def chunk_id(file: str, page: int | None, start: int, text: str) -> tuple[str, int]:
    """Stable id of a chunk: sha256 over its location and content.

    Returns the hex id (first 32 hex chars) and a positive 63-bit int for FAISS.
    """
    digest = hashlib.sha256(f"{file}\x00{page}\x00{start}\x00{text}".encode()).digest()
    return digest[:16].hex(), int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


class ChineseRecursiveSplitter:
    """Splits sections into overlapping chunks of about `chunk_size` characters."""

    def __init__(self, settings: SplitterSettings) -> None:
        self.settings = settings
        self._lc_splitter: Any = None

    @property
    def _splitter(self) -> Any:
        """langchain's splitter, built on first use: opening a KB to search needs only the fingerprint."""
        if self._lc_splitter is None:
            from langchain_text_splitters import RecursiveCharacterTextSplitter

            self._lc_splitter = RecursiveCharacterTextSplitter(
                separators=SEPARATORS,
                keep_separator="end",
                chunk_size=self.settings.chunk_size,
                chunk_overlap=self.settings.chunk_overlap,
                strip_whitespace=True,
                add_start_index=False,
            )
        return self._lc_splitter

    def fingerprint(self) -> dict[str, object]:
        return {"kind": "chinese-recursive", **self.settings.model_dump()}

    def split_text(self, text: str) -> Iterator[tuple[int, str]]:
        """Yield (start offset, chunk text) pairs for one text."""
        for base, window in _windows(text):
            cursor = 0
            for piece in self._splitter.split_text(window):
                # Chunks come in order; search forward from the previous start, allowing
                # for the overlap, so repeated phrases map to the right occurrence.
                found = window.find(piece, max(0, cursor - self.settings.chunk_overlap - 1))
                if found < 0:
                    found = window.find(piece)
                start = found if found >= 0 else cursor
                cursor = start + len(piece)
                yield base + start, piece

    def split(self, sections: Iterable[Section], file: str, path: str) -> list[Chunk]:
        """Chunks for one file; every chunk keeps file, path, page, heading and offset."""
        chunks: list[Chunk] = []
        seen: set[str] = set()
        for section in sections:
            for start, text in self.split_text(section.text):
                if not text.strip():
                    continue
                hex_id, int_id = chunk_id(file, section.page, start, text)
                if hex_id in seen:  # identical text at the same place: keep one
                    continue
                seen.add(hex_id)
                chunks.append(
                    Chunk(
                        id=hex_id,
                        int_id=int_id,
                        text=text,
                        file=file,
                        path=path,
                        page=section.page,
                        heading=section.heading,
                        start=start,
                    )
                )
        return chunks


def _windows(text: str) -> Iterator[tuple[int, str]]:
    """Cut a text into windows of at most `_WINDOW` chars, preferring line or space ends."""
    pos = 0
    n = len(text)
    while pos < n:
        end = min(n, pos + _WINDOW)
        if end < n:
            cut = max(text.rfind("\n", pos, end), text.rfind(" ", pos, end), text.rfind("。", pos, end))
            if cut > pos + _WINDOW // 2:
                end = cut + 1
        yield pos, text[pos:end]
        pos = end
