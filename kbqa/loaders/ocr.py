"""OCR of page images with RapidOCR (PP-OCR zh+en models shipped inside the wheel, offline).

The engine takes about a second to build and holds the ONNX sessions, so `OcrEngine`
builds it on first use and keeps it: one per `Loaders`, reused for every scanned page.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from kbqa.errors import DependencyMissingError
from kbqa.loaders.textnorm import rejoin_lines

if TYPE_CHECKING:
    import numpy as np

_MIN_SCORE = 0.5


class OcrFailedError(RuntimeError):
    """The OCR engine raised on one image; the message names the original error."""


class OcrEngine:
    """Lazily built RapidOCR; `recognize(image)` returns the page text in reading order."""

    def __init__(self) -> None:
        self._engine: Any = None
        self._errors: tuple[type[BaseException], ...] = (RuntimeError, ValueError, IndexError)
        self._lock = threading.Lock()
        self.calls = 0
        """Pages recognised so far (tests use it to prove only textless pages are OCR'd)."""

    def _get(self) -> Any:
        with self._lock:
            if self._engine is None:
                try:
                    from rapidocr_onnxruntime import RapidOCR
                except ImportError as exc:
                    raise DependencyMissingError("rapidocr-onnxruntime", "OCR of scanned PDF pages") from exc
                import cv2

                self._engine = RapidOCR()
                self._errors = (RuntimeError, ValueError, IndexError, cv2.error)
            return self._engine

    def recognize(self, image: np.ndarray) -> str:
        """Text of an RGB image (H×W×3 uint8): lines grouped into rows, rows top to bottom.

        Raises OcrFailedError if the engine fails on this image.
        """
        self.calls += 1
        engine = self._get()
        bgr = image[:, :, ::-1].copy()  # RapidOCR, like OpenCV, expects BGR
        try:
            result, _elapsed = engine(bgr)
        except self._errors as exc:  # onnxruntime / OpenCV failures on one odd image
            raise OcrFailedError(f"{type(exc).__name__}: {exc}") from exc
        if not result:
            return ""
        boxes = [(box, text) for box, text, score in result if text.strip() and float(score) >= _MIN_SCORE]
        return rejoin_lines("\n".join(_reading_order(boxes)), keep_short_lines=True)


def _reading_order(boxes: list[tuple[Any, str]]) -> list[str]:
    """Group detected text boxes into rows (vertical overlap), left to right within a row."""
    items = []
    for box, text in boxes:
        ys = [float(p[1]) for p in box]
        xs = [float(p[0]) for p in box]
        items.append((min(ys), max(ys), min(xs), text))
    items.sort(key=lambda it: (it[0], it[2]))
    rows: list[list[tuple[float, float, float, str]]] = []
    for item in items:
        top, bottom = item[0], item[1]
        if rows:
            r_top = min(i[0] for i in rows[-1])
            r_bottom = max(i[1] for i in rows[-1])
            overlap = min(bottom, r_bottom) - max(top, r_top)
            if overlap > 0.5 * min(bottom - top, r_bottom - r_top):
                rows[-1].append(item)
                continue
        rows.append([item])
    return [" ".join(i[3] for i in sorted(row, key=lambda i: i[2])) for row in rows]
