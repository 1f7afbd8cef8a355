"""File → `LoadedFile` (text Sections with page numbers and heading paths).

`Loaders` is a registry by file suffix over one small module per family (pdf, text,
office, html, tabular, json); family modules are imported on first use, so building
`Loaders` is cheap and a CLI that never sees a PDF never imports pdfium. The OCR
engine is likewise built on the first scanned page and then reused.
"""

from __future__ import annotations

import importlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from kbqa.config import LoaderSettings
from kbqa.errors import LoaderError, UnsupportedFileError
from kbqa.loaders.ocr import OcrEngine
from kbqa.loaders.zipcheck import check_office_zip
from kbqa.schema import LoadedFile

__all__ = ["SUPPORTED_SUFFIXES", "Loaders"]


@dataclass(frozen=True)
class _Spec:
    module: str
    function: str
    text_like: bool  # subject to `max_text_mb`
    ocr: bool = False  # the loader takes the OCR engine
    zipped: bool = False  # an Office zip archive: checked for zip bombs before parsing


_TEXT = _Spec("text", "load_text", True)
_MARKDOWN = _Spec("text", "load_markdown", True)
_HTML = _Spec("html", "load_html", True)
_CSV = _Spec("tabular", "load_csv", True)
_REGISTRY: dict[str, _Spec] = {
    ".pdf": _Spec("pdf", "load_pdf", False, ocr=True),
    ".txt": _TEXT,
    ".text": _TEXT,
    ".log": _TEXT,
    ".rst": _TEXT,
    ".md": _MARKDOWN,
    ".markdown": _MARKDOWN,
    ".docx": _Spec("office", "load_docx", False, zipped=True),
    ".pptx": _Spec("office", "load_pptx", False, zipped=True),
    ".html": _HTML,
    ".htm": _HTML,
    ".csv": _CSV,
    ".tsv": _CSV,
    ".xlsx": _Spec("tabular", "load_xlsx", False, zipped=True),
    ".json": _Spec("json", "load_json", True),
    ".jsonl": _Spec("json", "load_jsonl", True),
}
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_REGISTRY)

_LEGACY = {".doc": ".docx", ".ppt": ".pptx", ".xls": ".xlsx"}
# What parsing libraries raise on malformed input. Turned into LoaderError with the
# exception's class and message, so one bad file cannot abort a folder and the reason shows.
_PARSE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    KeyError,
    IndexError,
    AttributeError,
    TypeError,
    AssertionError,
    RuntimeError,
    SyntaxError,
    EOFError,
    zipfile.BadZipFile,
)


class Loaders:
    """Turns a file into Sections, choosing the loader by suffix."""

    def __init__(self, settings: LoaderSettings | None = None) -> None:
        self.settings = settings or LoaderSettings()
        self.ocr = OcrEngine()

    def supports(self, path: Path) -> bool:
        """True for a registered suffix; Office lock files ("~$report.docx") are not documents."""
        path = Path(path)
        return path.suffix.lower() in SUPPORTED_SUFFIXES and not path.name.startswith("~$")

    def load(self, path: Path) -> LoadedFile:
        """Load one file. Raises UnsupportedFileError / LoaderError with a human reason."""
        path = Path(path)
        spec = self._spec(path)
        self._check_size(path, spec)
        if spec.zipped:
            check_office_zip(path, self.settings.max_file_mb)
        function = getattr(importlib.import_module(f"kbqa.loaders.{spec.module}"), spec.function)
        try:
            if spec.ocr:
                return function(path, self.settings, self.ocr)  # type: ignore[no-any-return]
            return function(path, self.settings)  # type: ignore[no-any-return]
        except LoaderError:
            raise
        except OSError as exc:
            raise LoaderError(path, f"cannot read the file ({type(exc).__name__}: {exc})") from exc
        except _PARSE_ERRORS as exc:
            kind = path.suffix.lower().lstrip(".")
            raise LoaderError(path, f"cannot parse this {kind} file ({type(exc).__name__}: {exc})") from exc

    def _spec(self, path: Path) -> _Spec:
        suffix = path.suffix.lower()
        spec = _REGISTRY.get(suffix)
        if spec is not None:
            return spec
        if suffix in _LEGACY:
            reason = f"old binary Office format ({suffix}) is not supported; save it as {_LEGACY[suffix]}"
        elif not suffix:
            reason = "no file extension, so the file type is unknown"
        else:
            reason = f"unsupported file type '{suffix}' (supported: {', '.join(sorted(SUPPORTED_SUFFIXES))})"
        raise UnsupportedFileError(path, reason)

    def _check_size(self, path: Path, spec: _Spec) -> None:
        """Refuse missing, empty and oversized files before reading a byte."""
        try:
            stat = path.stat()
        except FileNotFoundError as exc:
            raise LoaderError(path, "file not found") from exc
        except OSError as exc:
            raise LoaderError(path, f"cannot read the file ({type(exc).__name__}: {exc})") from exc
        if path.is_dir():
            raise LoaderError(path, "is a directory, not a file")
        size_mb = stat.st_size / (1024 * 1024)
        if stat.st_size == 0:
            raise LoaderError(path, "empty file")
        if size_mb > self.settings.max_file_mb:
            raise LoaderError(
                path, f"file is {size_mb:.1f} MB, over the limit loaders.max_file_mb = {self.settings.max_file_mb:g}"
            )
        if spec.text_like and size_mb > self.settings.max_text_mb:
            raise LoaderError(
                path,
                f"text file is {size_mb:.1f} MB, over the limit loaders.max_text_mb = {self.settings.max_text_mb:g}",
            )
