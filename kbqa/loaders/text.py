"""Plain text (.txt, .log, .rst) and Markdown (.md) files.

`read_text` is the one way every text-like loader (csv, json, html too) turns a
file into a str: encoding detection, mojibake repair, control characters removed.
"""

from __future__ import annotations

import re
from pathlib import Path

from kbqa.config import LoaderSettings
from kbqa.encoding import decode_bytes
from kbqa.errors import LoaderError
from kbqa.loaders.mojibake import repair_mojibake_detail
from kbqa.loaders.sections import HeadingSections
from kbqa.loaders.textnorm import normalize_newlines, strip_control
from kbqa.schema import LoadedFile, Section

_ATX_RE = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT_RE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def decode_file(data: bytes, name: str) -> tuple[str, str, list[str]]:
    """Bytes → clean text: (text, encoding, warnings). Raises LoaderError if blank."""
    text, encoding, warnings = decode_bytes(data, name)
    text, warnings = clean_text(text, name, warnings)
    return text, encoding, warnings


def clean_text(text: str, name: str, warnings: list[str]) -> tuple[str, list[str]]:
    """Repair mojibake, normalise newlines, drop control characters; refuse blank text."""
    text, codepage = repair_mojibake_detail(text)
    if codepage:
        warnings = [*warnings, f"repaired mojibake ({codepage})"]
    text = strip_control(normalize_newlines(text))
    if not text.strip():
        raise LoaderError(name, "no text in the file (only whitespace)")
    return text, warnings


def read_text(path: Path) -> tuple[str, str, list[str]]:
    """Read and decode a text-like file (see `decode_file`)."""
    return decode_file(path.read_bytes(), str(path))


def load_text(path: Path, settings: LoaderSettings) -> LoadedFile:
    """A plain text file is one Section; the splitter cuts it into chunks."""
    text, encoding, warnings = read_text(path)
    return LoadedFile(sections=[Section(text=text.strip("\n"))], warnings=warnings, encoding=encoding)


def load_markdown(path: Path, settings: LoaderSettings) -> LoadedFile:
    text, encoding, warnings = read_text(path)
    sections = markdown_sections(text)
    return LoadedFile(sections=sections, warnings=warnings, encoding=encoding)


def markdown_sections(text: str) -> list[Section]:
    """Sections per ATX ("## Title") or setext (Title / ====) heading, outside code fences."""
    builder = HeadingSections()
    lines = text.split("\n")
    fence: str | None = None
    pending: list[str] = []  # lines of the current paragraph, to recognise setext headings
    for line in lines:
        fence_match = _FENCE_RE.match(line)
        if fence is not None:
            pending.append(line)
            if fence_match and fence_match.group(1)[0] == fence[0] and len(fence_match.group(1)) >= len(fence):
                fence = None
            continue
        if fence_match:
            fence = fence_match.group(1)
            pending.append(line)
            continue
        atx = _ATX_RE.match(line)
        if atx:
            builder.text("\n".join(pending))
            pending = []
            builder.heading(len(atx.group(1)), atx.group(2) or "")
            continue
        setext = _SETEXT_RE.match(line)
        if setext and pending and pending[-1].strip() and not pending[-1].lstrip().startswith(("-", "*", "+", ">")):
            title = pending.pop()
            builder.text("\n".join(pending))
            pending = []
            builder.heading(1 if setext.group(1)[0] == "=" else 2, title)
            continue
        pending.append(line)
    builder.text("\n".join(pending))
    return builder.finish()
