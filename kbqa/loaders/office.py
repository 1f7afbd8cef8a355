"""Word (.docx) → Sections per heading; PowerPoint (.pptx) → one Section per slide.

docx headings are found by style ("Heading 2", a Chinese Word's "标题 2", "Title") or
by an explicit outline level, so documents from localised Word keep their structure.
Tables are rendered row by row ("a | b | c") inside the section of the heading above
them, so a table's rows keep that heading.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kbqa.config import LoaderSettings
from kbqa.errors import LoaderError
from kbqa.loaders.sections import HeadingSections
from kbqa.schema import LoadedFile, Section

_HEADING_STYLE_RE = re.compile(r"^(?:heading|标题)\s*(\d)$", re.IGNORECASE)
_TITLE_STYLES = frozenset({"title", "标题"})
_W_NS = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _open_error(path: Path, kind: str, exc: Exception) -> LoaderError:
    return LoaderError(path, f"not a readable {kind} file ({type(exc).__name__}: {exc})")


# ------------------------------------------------------------------ docx


def load_docx(path: Path, settings: LoaderSettings) -> LoadedFile:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise _open_error(path, "Word .docx", exc) from exc
    builder = HeadingSections()
    style_levels: dict[str | None, int | None] = {}
    for block in _body_blocks(document):
        if hasattr(block, "rows"):
            builder.text("\n".join(table_rows(block)))
            continue
        level = _heading_level(block, style_levels)
        if level is not None:
            builder.heading(level, paragraph_text(block._p))
        else:
            builder.text(paragraph_text(block._p))
    sections = builder.finish()
    if not sections:
        raise LoaderError(path, "no text in the document")
    return LoadedFile(sections=sections)


def _body_blocks(document: Any) -> Iterator[Any]:
    """Paragraphs and tables of the body in document order, like `Document.iter_inner_content`.

    That one selects them with the XPath union "./w:p | ./w:tbl", which libxml2 evaluates in
    quadratic time (3 s for 28,000 paragraphs, minutes for 100,000); iterating the children is linear.
    """
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    parent = document._body
    for element in document.element.body.iterchildren(f"{_W_NS}p", f"{_W_NS}tbl"):
        yield Paragraph(element, parent) if element.tag == f"{_W_NS}p" else Table(element, parent)


_RUN_TEXT_TAGS = frozenset(f"{_W_NS}{t}" for t in ("br", "cr", "noBreakHyphen", "ptab", "t", "tab"))
_RUN = f"{_W_NS}r"
_HYPERLINK = f"{_W_NS}hyperlink"


def paragraph_text(p: Any) -> str:
    """A `w:p` element's text, as python-docx's `Paragraph.text` gives it, without XPath.

    python-docx evaluates an XPath expression per paragraph and per run; lxml's cost for that
    grows with the document, so long documents slowed down more than linearly. Walking the
    children is linear. Each child's `str()` is python-docx's text for it (tab → "\t", br → "\n").
    """
    parts: list[str] = []
    for child in p:
        runs = [child] if child.tag == _RUN else child.iterchildren(_RUN) if child.tag == _HYPERLINK else ()
        for run in runs:
            parts.extend(str(e) for e in run if e.tag in _RUN_TEXT_TAGS)
    return "".join(parts)


def _heading_level(paragraph: Any, style_levels: dict[str | None, int | None]) -> int | None:
    """0 for a Title, 1–9 for headings, None for body text.

    The level a style gives is looked up once per style id and kept in `style_levels`:
    python-docx resolves a paragraph's style by scanning every style of the document, so doing
    it per paragraph made a 28,000-paragraph document take 40 s instead of 1 s.
    """
    style_id = paragraph._p.style
    if style_id not in style_levels:
        style_levels[style_id] = _style_level(paragraph.style)
    level = style_levels[style_id]
    return level if level is not None else _outline_level(paragraph._p)


def _style_level(style: Any) -> int | None:
    """The heading level a paragraph style (or a style it is based on) gives, if any."""
    seen = 0
    while style is not None and seen < 10:
        name = (style.name or "").strip()
        match = _HEADING_STYLE_RE.match(name)
        if match:
            return int(match.group(1))
        if name.lower() in _TITLE_STYLES:
            return 0
        level = _outline_level(style.element)
        if level is not None:
            return level
        style = style.base_style
        seen += 1
    return None


def _outline_level(element: Any) -> int | None:
    """w:outlineLvl (0-based, 9 = body text) on a paragraph or style → heading level."""
    ppr = element.find(f"{_W_NS}pPr")
    if ppr is None:
        return None
    lvl = ppr.find(f"{_W_NS}outlineLvl")
    if lvl is None:
        return None
    value = lvl.get(f"{_W_NS}val")
    if value is None or not value.isdigit() or int(value) >= 9:
        return None
    return int(value) + 1


def table_rows(table: Any) -> Iterator[str]:
    """A docx table as text rows "a | b | c"; merged cells appear once; nested tables inline."""
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if cell._tc is previous:  # a horizontally merged cell repeats the same element
                continue
            previous = cell._tc
            parts = [text for p in cell._tc.iterchildren(f"{_W_NS}p") if (text := paragraph_text(p).strip())]
            for inner in cell.tables:
                parts.extend(table_rows(inner))
            cells.append(" ".join(parts))
        if any(cells):
            yield " | ".join(cells)


# ------------------------------------------------------------------ pptx


def load_pptx(path: Path, settings: LoaderSettings) -> LoadedFile:
    from pptx import Presentation
    from pptx.exc import PackageNotFoundError

    try:
        deck = Presentation(str(path))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise _open_error(path, "PowerPoint .pptx", exc) from exc
    sections: list[Section] = []
    for number, slide in enumerate(deck.slides, start=1):
        title_shape = slide.shapes.title
        title = " ".join(title_shape.text_frame.text.split()) if title_shape is not None else ""
        parts = [text for shape in _reading_order(slide.shapes) for text in _shape_text(shape)]
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame
            if notes is not None and notes.text.strip():
                parts.append("Notes: " + notes.text.strip())
        body = "\n".join(p for p in parts if p.strip())
        if body.strip():
            sections.append(Section(text=body, page=number, heading=title))
    if not sections:
        raise LoaderError(path, "no text on any slide")
    return LoadedFile(sections=sections)


def _reading_order(shapes: Iterable[Any]) -> list[Any]:
    """Top to bottom, then left to right (z-order is not reading order)."""
    return sorted(shapes, key=lambda s: ((s.top or 0) // 50000, s.left or 0))


def _shape_text(shape: Any) -> Iterator[str]:
    from pptx.shapes.group import GroupShape

    if isinstance(shape, GroupShape):
        for inner in _reading_order(shape.shapes):
            yield from _shape_text(inner)
        return
    if getattr(shape, "has_table", False) and shape.has_table:
        for row in shape.table.rows:
            cells = [" ".join(cell.text.split()) for cell in row.cells]
            if any(cells):
                yield " | ".join(cells)
        return
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        text = "\n".join(p.text for p in shape.text_frame.paragraphs if p.text.strip())
        if text:
            yield text
