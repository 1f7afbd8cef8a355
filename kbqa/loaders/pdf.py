"""PDF → one Section per page (1-based), heading = the outline (bookmark) path covering it.

Text layer: pypdfium2, not pypdf. Measured on asymptote.pdf (196 pages, Debian
asymptote-doc) on this 2-core machine: pypdfium2 ~850 pages/s vs pypdf
`extract_text()` ~57 pages/s, with the same text (pdfium also marks end-of-line
hyphenation, which we join). The outline, page rendering for OCR and the password
check also come from pdfium, so a PDF is parsed once. pypdf is used only to explain
why pdfium refused a file (e.g. a PDF with zero pages, which pdfium calls a format error).

Pages whose text layer has fewer than `ocr_min_chars` non-space characters are
rendered at 200 dpi and OCR'd, only those pages.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium

from kbqa.config import LoaderSettings
from kbqa.errors import LoaderError
from kbqa.loaders.ocr import OcrEngine, OcrFailedError
from kbqa.loaders.textnorm import clean_pdf_text, non_space_len
from kbqa.schema import LoadedFile, Section

OCR_DPI = 200
_MAX_RENDER_PX = 4000  # posters and maps: cap the bitmap, not the dpi of ordinary pages
_ERR_PASSWORD = 4
_ERR_SECURITY = 5


def load_pdf(path: Path, settings: LoaderSettings, ocr: OcrEngine) -> LoadedFile:
    """One Section per page that has text; warnings name OCR'd and unreadable pages."""
    pdf = _open(path)
    try:
        if len(pdf) == 0:
            raise LoaderError(path, "PDF has zero pages")
        warnings: list[str] = []
        try:
            headings = _page_headings(pdf)
        except pdfium.PdfiumError as exc:  # the outline only adds headings; the text still loads
            headings = {}
            warnings.append(f"outline (bookmarks) unreadable, pages have no headings ({exc})")
        if not _has_eof_marker(path):
            warnings.append("PDF looks truncated (no %%EOF marker); loaded what could be read")
        sections: list[Section] = []
        ocr_tried = 0
        for index in range(len(pdf)):
            try:
                text, tried = _read_page(pdf, index, settings, ocr, warnings)
            except pdfium.PdfiumError as exc:  # one damaged page must not lose the others
                warnings.append(f"page {index + 1}: unreadable ({type(exc).__name__}: {exc})")
                continue
            ocr_tried += tried
            if text.strip():
                sections.append(Section(text=text, page=index + 1, heading=headings.get(index, "")))
        if not sections:
            raise LoaderError(path, _no_text_reason(len(pdf), settings, ocr_tried))
        return LoadedFile(sections=sections, warnings=warnings)
    finally:
        pdf.close()


def _read_page(
    pdf: pdfium.PdfDocument, index: int, settings: LoaderSettings, ocr: OcrEngine, warnings: list[str]
) -> tuple[str, bool]:
    """The page's text, from its text layer or, if that is (nearly) empty, from OCR."""
    page = pdf[index]
    try:
        text = _page_text(page)
        if not settings.ocr or _meaningful_len(text) >= settings.ocr_min_chars or not _has_content(page):
            return text, False
        warnings.append(f"page {index + 1}: OCR")
        try:
            ocr_text = ocr.recognize(_render(page))
        except OcrFailedError as exc:
            warnings.append(f"page {index + 1}: OCR failed ({exc})")
            return text, True
        return (ocr_text if _meaningful_len(ocr_text) > _meaningful_len(text) else text), True
    finally:
        page.close()


_JUNK = re.compile("[\ue000-\uf8ff\ufffd]")


def _meaningful_len(text: str) -> int:
    """Non-space characters that are not private-use or U+FFFD (what broken font maps produce)."""
    return non_space_len(text) - len(_JUNK.findall(text))


def _open(path: Path) -> pdfium.PdfDocument:
    """Open with pdfium (an empty user password is tried by pdfium itself)."""
    try:
        return pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code == _ERR_PASSWORD:
            raise LoaderError(path, "encrypted PDF, needs a password") from exc
        if code == _ERR_SECURITY:
            raise LoaderError(path, "encrypted PDF with an unsupported security handler") from exc
        raise LoaderError(path, _diagnose(path, exc)) from exc


def _has_eof_marker(path: Path) -> bool:
    """The spec puts %%EOF in the last 1 KB; allow 8 KB of trailing junk, which readers tolerate."""
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - 8192))
        return b"%%EOF" in fh.read()


def _diagnose(path: Path, exc: pdfium.PdfiumError) -> str:
    """A human reason for a PDF pdfium could not open."""
    with path.open("rb") as fh:
        head = fh.read(1024)
    if b"%PDF-" not in head:
        return "not a PDF file (no %PDF- header); the file is damaged or has the wrong extension"
    if not _has_eof_marker(path):
        return "truncated PDF (no %%EOF end marker): the file was cut off, e.g. by an incomplete download"
    pages = _pypdf_page_count(path)
    if pages == 0:
        return "PDF has zero pages"
    return f"corrupt PDF, cannot be parsed ({type(exc).__name__}: {exc})"


def _pypdf_page_count(path: Path) -> int | None:
    """Page count by pypdf's more lenient parser; None if it cannot read the file either."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its "EOF marker not found" chatter would only repeat our reason
    try:
        return len(PdfReader(str(path)).pages)
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError):
        # pypdf raises plain ValueError/KeyError/... on malformed objects; the caller
        # reports pdfium's error, which names the reason, so nothing is hidden here.
        return None
    finally:
        logger.setLevel(level)


def _page_text(page: pdfium.PdfPage) -> str:
    textpage = page.get_textpage()
    try:
        return clean_pdf_text(textpage.get_text_range())
    finally:
        textpage.close()


def _has_content(page: pdfium.PdfPage) -> bool:
    """Anything drawn on the page; an empty page renders white, so OCR is skipped there."""
    return any(True for _ in page.get_objects(max_depth=1))


def _render(page: pdfium.PdfPage) -> np.ndarray:
    """The page as an RGB array at OCR_DPI (capped at _MAX_RENDER_PX on the long side)."""
    width, height = page.get_size()
    scale = min(OCR_DPI / 72, _MAX_RENDER_PX / max(width, height, 1))
    bitmap = page.render(scale=scale)
    try:
        return np.asarray(bitmap.to_pil().convert("RGB"))
    finally:
        bitmap.close()


def _no_text_reason(pages: int, settings: LoaderSettings, ocr_tried: int) -> str:
    if not settings.ocr:
        return f"no text layer on any of {pages} page(s) and OCR is off (loaders.ocr = false)"
    if ocr_tried:
        return f"no text found on any of {pages} page(s), not even by OCR"
    return f"no text on any of {pages} page(s) (pages are blank)"


def _page_headings(pdf: pdfium.PdfDocument) -> dict[int, str]:
    """page index → outline path ("Chapter > Section") covering that page.

    A page where bookmarks start takes the first of them; later pages carry the last
    bookmark started before them. No outline → empty dict.
    """
    starts: list[tuple[int, str]] = []
    stack: list[str] = []
    for bookmark in pdf.get_toc(max_depth=8):
        title = " ".join((bookmark.get_title() or "").split())
        del stack[bookmark.level :]
        stack.extend([""] * (bookmark.level - len(stack)))
        stack.append(title)
        dest = bookmark.get_dest()
        index = dest.get_index() if dest is not None else None
        if index is not None and 0 <= index < len(pdf) and title:
            starts.append((index, " > ".join(t for t in stack if t)))
    by_page: dict[int, list[str]] = {}
    for index, heading in starts:
        by_page.setdefault(index, []).append(heading)
    headings: dict[int, str] = {}
    current = ""
    for index in range(len(pdf)):
        here = by_page.get(index)
        if here:
            headings[index] = here[0]
            current = here[-1]
        elif current:
            headings[index] = current
    return headings
