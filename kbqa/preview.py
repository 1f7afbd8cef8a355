"""A cited PDF page as a PNG with the cited passage highlighted (for the browser app and the API).

Chunk text is not byte-identical to the page's text layer (lines rejoined, hyphens dropped,
whitespace collapsed), so the passage is located ignoring whitespace and case, bounded by the
first and the last short probe of it that occur on the page. If it cannot be located the page
is returned without a highlight.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from kbqa.errors import KbqaError

Rect = tuple[float, float, float, float]
"""left, bottom, right, top in PDF points (origin bottom-left)."""
PROBE = 24


def passage_span(page_text: str, passage: str) -> tuple[int, int] | None:
    """(first, last) character indexes of `passage` inside `page_text`, or None."""
    keep = [i for i, ch in enumerate(page_text) if not ch.isspace()]
    hay = "".join(page_text[i] for i in keep).casefold()
    needle = "".join(passage.split()).casefold()
    if not needle or not hay:
        return None
    probe = min(PROBE, len(needle))
    offsets = [*range(0, len(needle) - probe + 1, probe), len(needle) - probe]
    begin = next((pos for off in offsets if (pos := hay.find(needle[off:off + probe])) >= 0), -1)
    if begin < 0:
        return None
    end = next((pos + probe for off in reversed(offsets) if (pos := hay.find(needle[off:off + probe], begin)) >= 0),
               begin + probe)
    end = min(end, begin + 2 * len(needle), len(keep))
    return keep[begin], keep[end - 1]


def passage_rects(textpage: Any, passage: str) -> list[Rect]:
    """Rectangles covering `passage` on a pypdfium2 text page ([] if it is not found)."""
    span = passage_span(textpage.get_text_range(), passage)
    if span is None:
        return []
    first, last = span
    return [textpage.get_rect(i) for i in range(textpage.count_rects(first, last - first + 1))]


def render_page_png(path: str | Path, page: int, passage: str = "", scale: float = 1.6, trim: bool = True) -> bytes:
    """PNG bytes of 1-based `page` of the PDF at `path`, with `passage` highlighted in yellow.

    `trim` cuts the page's empty margins (keeping a little padding), so a half-empty page
    does not show as a tall white image.
    """
    import pypdfium2 as pdfium
    from PIL import Image, ImageChops, ImageDraw

    try:
        pdf = pdfium.PdfDocument(str(path))
    except (pdfium.PdfiumError, OSError) as exc:
        raise KbqaError(f"{path}: cannot open the PDF ({exc})") from exc
    try:
        if not 1 <= page <= len(pdf):
            raise KbqaError(f"{path}: no page {page} (the PDF has {len(pdf)})")
        pg = pdf[page - 1]
        image = pg.render(scale=scale).to_pil().convert("RGBA")
        rects = passage_rects(pg.get_textpage(), passage) if passage else []
        height = pg.get_height()
    finally:
        pdf.close()
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for left, bottom, right, top in rects:
        draw.rectangle([left * scale - 1, (height - top) * scale - 1, right * scale + 1, (height - bottom) * scale + 1],
                       fill=(255, 208, 0, 96))
    result = Image.alpha_composite(image, overlay).convert("RGB")
    if trim:
        box = ImageChops.difference(result, Image.new("RGB", result.size, (255, 255, 255))).getbbox()
        if box:
            pad = int(24 * scale)
            result = result.crop((max(box[0] - pad, 0), max(box[1] - pad, 0),
                                  min(box[2] + pad, result.width), min(box[3] + pad, result.height)))
    out = io.BytesIO()
    result.save(out, format="PNG", optimize=True)
    return out.getvalue()
