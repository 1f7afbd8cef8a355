"""HTML (.html, .htm) → Sections per heading (h1–h6), page None.

A small walker instead of `get_text()`: block elements become line breaks, inline
ones do not (so "<b>bold</b> text" stays one sentence), table cells are joined with
" | ", and script/style/navigation chrome is dropped.
"""

from __future__ import annotations

import re
import warnings as _warnings
from pathlib import Path

from bs4 import BeautifulSoup, Comment, NavigableString, Tag, XMLParsedAsHTMLWarning

from kbqa.config import LoaderSettings
from kbqa.errors import LoaderError
from kbqa.loaders.sections import HeadingSections
from kbqa.loaders.text import clean_text, decode_file
from kbqa.schema import LoadedFile, Section

_SKIP = frozenset({"script", "style", "noscript", "template", "head", "nav", "svg", "iframe", "button", "select"})
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_BLOCK = frozenset(
    "address article aside blockquote body dd details div dl dt fieldset figcaption figure footer header hr "
    "li main ol p pre section summary table tbody thead tfoot tr ul caption".split()
)
_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-]+)""", re.IGNORECASE)
_CHARSET_ALIASES = {"gb2312": "gb18030", "gbk": "gb18030", "big5": "cp950", "x-gbk": "gb18030"}


def load_html(path: Path, settings: LoaderSettings) -> LoadedFile:
    data = path.read_bytes()
    text, encoding, warnings = _decode(data, str(path))
    with _warnings.catch_warnings():  # XHTML (an <?xml?> prolog) parses fine as HTML; don't nag
        _warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(text, "lxml")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if isinstance(title_tag, Tag) else ""
    builder = HeadingSections()
    root = soup.body or soup
    walker = _Walker(builder)
    try:
        walker.walk(root)
    except RecursionError as exc:  # pathologically deep markup
        raise LoaderError(path, f"HTML nested too deeply to read ({type(exc).__name__})") from exc
    walker.flush()
    # Text before the first heading (or a page without headings) is filed under <title>.
    sections = [s if s.heading or not title else Section(s.text, s.page, title) for s in builder.finish()]
    if not sections:
        raise LoaderError(path, "no visible text in the HTML page")
    return LoadedFile(sections=sections, warnings=warnings, encoding=encoding)


def _decode(data: bytes, name: str) -> tuple[str, str, list[str]]:
    """A <meta charset> declaration wins if the bytes really decode with it; else detect."""
    match = _CHARSET_RE.search(data[:4096])
    if match and not data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        declared = match.group(1).decode("ascii").lower()
        codec = _CHARSET_ALIASES.get(declared, declared)
        if codec.startswith(("utf-16", "utf-32", "utf16", "utf32")):  # browsers ignore these in <meta> too
            return decode_file(data, name)
        try:
            decoded = data.decode(codec)
        except (LookupError, UnicodeDecodeError):
            pass
        else:
            text, warnings = clean_text(decoded, name, [])
            return text, codec, warnings
    return decode_file(data, name)


class _Walker:
    def __init__(self, builder: HeadingSections) -> None:
        self.builder = builder
        self.line: list[str] = []
        self.lines: list[str] = []

    def newline(self) -> None:
        line = re.sub(r"[ \t\u00a0]+", " ", "".join(self.line)).strip()
        if line:
            self.lines.append(line)
        self.line = []

    def flush(self) -> None:
        self.newline()
        if self.lines:
            self.builder.text("\n".join(self.lines))
        self.lines = []

    def walk(self, node: Tag) -> None:
        for child in node.children:
            if isinstance(child, Comment):
                continue
            if isinstance(child, NavigableString):
                self.line.append(str(child) if node.name == "pre" else re.sub(r"\s+", " ", str(child)))
                continue
            if not isinstance(child, Tag) or child.name in _SKIP:
                continue
            if child.name in _HEADINGS:
                self.flush()
                self.builder.heading(_HEADINGS[child.name], child.get_text(" ", strip=True))
            elif child.name == "br":
                self.newline()
            elif child.name in ("td", "th"):
                if self.line and "".join(self.line).strip():
                    self.line.append(" | ")
                self.walk(child)
            elif child.name == "pre":
                self.newline()
                self.lines.extend(child.get_text().strip("\n").split("\n"))
            elif child.name in _BLOCK:
                self.newline()
                self.walk(child)
                self.newline()
            else:
                self.walk(child)
