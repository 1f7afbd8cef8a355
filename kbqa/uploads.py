"""Saving uploaded files into a knowledge folder, safely (shared by the browser app and the REST API).

What a browser or HTTP client sends is untrusted: a file name may carry directories, `..`,
an absolute or drive path, NUL or control characters, Windows-reserved characters or device
names; a .zip may hold members that point outside the folder ("zip slip"), lie about their
size, or expand a few kilobytes into gigabytes. `save_uploads` turns each upload into either
a file strictly inside `target` or a per-file rejection with a reason, so one bad file never
blocks the others. Unicode (Chinese) names are kept, NFC-normalised.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, Literal

from kbqa.errors import UploadError

__all__ = ["UploadError", "UploadLimits", "UploadReport", "UploadResult", "safe_name", "safe_relpath", "save_uploads"]

MAX_RATIO = 200
"""A zip member expanding more than this many times (and past RATIO_MIN_BYTES) is treated as a bomb."""
RATIO_MIN_BYTES = 1 << 20
MAX_COMPONENT_BYTES = 240
_RESERVED_CHARS = frozenset('<>:"/\\|?*')
_WINDOWS_DEVICES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                              *(f"LPT{i}" for i in range(1, 10))})
_JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", ".ds_store"})
_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class UploadLimits:
    """Limits for one upload request; `from_settings` reads them from `settings.ui`."""

    max_file_bytes: int = 200 << 20
    """Per uploaded file, and per .zip for the total size of its extracted members."""
    max_files: int = 500
    """Files saved per request, zip members included."""
    max_ratio: float = MAX_RATIO

    @classmethod
    def from_mb(cls, max_upload_mb: float, max_upload_files: int) -> UploadLimits:
        return cls(max_file_bytes=int(max_upload_mb * (1 << 20)), max_files=max_upload_files)


@dataclass(slots=True)
class UploadResult:
    """The outcome for one uploaded file or zip member. `saved_as` is relative to the target (posix)."""

    name: str
    status: Literal["saved", "rejected"]
    saved_as: str = ""
    reason: str = ""
    size: int = 0


@dataclass(slots=True)
class UploadReport:
    results: list[UploadResult] = field(default_factory=list)

    @property
    def saved(self) -> list[UploadResult]:
        return [r for r in self.results if r.status == "saved"]

    @property
    def rejected(self) -> list[UploadResult]:
        return [r for r in self.results if r.status == "rejected"]


def safe_name(name: str) -> str:
    """One safe path component from an untrusted name ('' if nothing usable is left).

    NFC-normalises; drops control/format characters (NUL, bidi overrides); replaces
    Windows-reserved characters with '_'; strips leading dots and spaces (hidden files would
    never be indexed) and trailing dots and spaces (Windows drops them); prefixes Windows
    device names (CON, NUL, COM1 …); cuts to MAX_COMPONENT_BYTES of UTF-8, keeping the suffix.
    Does not split directories: callers pass a single component (see `safe_relpath`).
    """
    name = unicodedata.normalize("NFC", name)
    name = "".join(
        "_" if ch in _RESERVED_CHARS else ch
        for ch in name
        if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn") or ch == " "
    )
    name = name.strip(" .").strip()
    if not name:
        return ""
    stem, dot, suffix = name.rpartition(".") if "." in name else (name, "", "")
    if stem.split(".")[0].upper().rstrip() in _WINDOWS_DEVICES:
        name = "_" + name
    if len(name.encode("utf-8")) > MAX_COMPONENT_BYTES:
        tail = (dot + suffix) if len((dot + suffix).encode()) <= 16 else ""
        budget = MAX_COMPONENT_BYTES - len(tail.encode())
        head = name[: len(name) - len(tail)].encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip(" .")
        name = head + tail
    return name


def safe_relpath(name: str) -> PurePosixPath | None:
    """A safe relative path from an untrusted (zip member) path, or None if nothing is left.

    Both '/' and '\\' separate; a drive ('C:'), root, '.', '..' and empty components are
    dropped, so the result can only point below the folder it is joined to.
    """
    parts: list[str] = []
    for raw in name.replace("\\", "/").split("/"):
        if raw in ("", ".", "..") or (len(raw) == 2 and raw[1] == ":" and not parts):
            continue
        part = safe_name(raw)
        if part:
            parts.append(part)
    return PurePosixPath(*parts) if parts else None


def _is_junk(member: str) -> bool:
    """OS metadata that zips of folders carry along: never a document, skipped silently."""
    parts = [p for p in member.replace("\\", "/").split("/") if p]
    if not parts:
        return True
    return (parts[0] == "__MACOSX" or parts[-1].lower() in _JUNK_NAMES or parts[-1].startswith("._")
            or any(p.startswith(".") and p not in (".", "..") for p in parts[:-1]))


class _Saver:
    """Writes into one target folder, atomically, never outside it; remembers names it used."""

    def __init__(self, target: Path, supports: Callable[[Path], bool], limits: UploadLimits) -> None:
        target.mkdir(parents=True, exist_ok=True)
        self.root = target.resolve()
        self.supports = supports
        self.limits = limits
        self.used: set[str] = set()
        self.report = UploadReport()

    def reject(self, name: str, reason: str, size: int = 0) -> None:
        self.report.results.append(UploadResult(name, "rejected", reason=reason, size=size))

    def check(self, rel: PurePosixPath | None) -> str | None:
        """The reason `rel` cannot be saved, or None."""
        if rel is None:
            return "no usable file name"
        if rel.suffix.lower() == ".zip":
            return "nested .zip archives are not extracted"
        if not self.supports(Path(rel.name)):
            return f"unsupported file type '{rel.suffix.lower() or '(none)'}'"
        if len(self.report.saved) >= self.limits.max_files:
            return f"over the limit of {self.limits.max_files} files per upload"
        return None

    def write(self, display: str, rel: PurePosixPath, chunks: Iterable[bytes], limit: int) -> None:
        """Stream `chunks` into target/rel; reject (and leave nothing) if more than `limit` bytes arrive."""
        rel = self._unique(rel)
        dest = self.root.joinpath(*rel.parts)
        tmp_name = ""
        try:
            # rel has no '..' or root, so only a symlink inside the folder could lead out: check first.
            if not dest.resolve().is_relative_to(self.root):
                self.reject(display, "would be written outside the knowledge folder")
                return
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_dir():
                self.reject(display, f"a folder named {rel.as_posix()!r} already exists")
                return
            size = 0
            with tempfile.NamedTemporaryFile("wb", dir=dest.parent, prefix=".upload-", delete=False) as fh:
                tmp_name = fh.name
                for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise _TooBig(size)
                    fh.write(chunk)
            os.replace(tmp_name, dest)
            tmp_name = ""
            self.used.add(rel.as_posix().casefold())
            self.report.results.append(UploadResult(display, "saved", rel.as_posix(), size=size))
        except _TooBig as exc:
            self.reject(display, f"larger than the upload limit of {_mb(limit)} (at least {_mb(exc.size)})")
        except (OSError, zipfile.BadZipFile, EOFError) as exc:  # one bad member never stops the rest
            self.reject(display, f"could not be saved ({type(exc).__name__}: {exc})")
        finally:
            if tmp_name:
                Path(tmp_name).unlink(missing_ok=True)

    def _unique(self, rel: PurePosixPath) -> PurePosixPath:
        """Two uploads with the same name in one request get 'name (2).pdf', not an overwrite."""
        candidate, i = rel, 2
        while candidate.as_posix().casefold() in self.used:
            candidate = rel.with_name(f"{rel.stem} ({i}){rel.suffix}")
            i += 1
        return candidate


class _TooBig(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


def _mb(n: float) -> str:
    return f"{n / (1 << 20):.1f} MB"


def _read_chunks(fh: IO[bytes]) -> Iterable[bytes]:
    while chunk := fh.read(_CHUNK):
        yield chunk


def _save_zip(saver: _Saver, display: str, fh: BinaryIO) -> None:
    try:
        archive = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        saver.reject(display, f"not a readable .zip archive ({exc})")
        return
    limits = saver.limits
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir() and not _is_junk(m.filename)]
        declared = sum(m.file_size for m in members)
        if declared > limits.max_file_bytes:
            saver.reject(display, f"expands to {_mb(declared)}, over the upload limit of {_mb(limits.max_file_bytes)}")
            return
        room = limits.max_files - len(saver.report.saved)
        if len(members) > room:
            saver.reject(display, f"holds {len(members)} files, over the limit of {limits.max_files} files per upload"
                         + (f" ({room} left)" if room < limits.max_files else ""))
            return
        budget = limits.max_file_bytes
        for m in members:
            shown = f"{display}/{m.filename}"
            rel = safe_relpath(m.filename)
            reason = saver.check(rel)
            if reason is None and m.flag_bits & 0x1:
                reason = "encrypted zip members are not supported"
            if reason is None and stat.S_ISLNK(m.external_attr >> 16):
                reason = "symbolic links are not extracted"
            if reason is None and m.file_size > RATIO_MIN_BYTES and m.file_size > limits.max_ratio * max(
                    m.compress_size, 1):
                reason = f"suspicious compression ratio ({m.file_size // max(m.compress_size, 1)}:1), not extracted"
            if reason is not None or rel is None:
                saver.reject(shown, reason or "no usable file name", m.file_size)
                continue
            before = len(saver.report.saved)
            # The member may lie about its size: never read more than it declared or the budget left.
            try:
                with archive.open(m) as src:
                    saver.write(shown, rel, _read_chunks(src), min(m.file_size, budget))
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
                saver.reject(shown, f"could not be extracted ({type(exc).__name__}: {exc})")
            if len(saver.report.saved) > before:
                budget -= saver.report.saved[-1].size


def save_uploads(
    files: Iterable[tuple[str, bytes | BinaryIO]],
    target: str | Path,
    supports: Callable[[Path], bool],
    limits: UploadLimits | None = None,
) -> UploadReport:
    """Save uploaded files (and the members of uploaded .zip files) under `target`.

    `files` are (client-side name, content) pairs; a name keeps only its last component, a
    zip member keeps its (sanitised) folders. `supports` decides which types are accepted,
    normally `Loaders(settings.loaders).supports`. Every input yields at least one
    `UploadResult`; nothing is ever written outside `target`; a file saved under a name that
    already exists replaces it (the index then updates it). Raises `UploadError` only when
    `target` itself cannot be created.
    """
    limits = limits or UploadLimits()
    try:
        saver = _Saver(Path(target), supports, limits)
    except OSError as exc:
        raise UploadError(f"cannot use upload folder {target}: {exc}") from exc
    for raw_name, content in files:
        fh: BinaryIO = io.BytesIO(content) if isinstance(content, bytes | bytearray) else content
        display = raw_name.replace("\x00", "")
        base = raw_name.replace("\\", "/").rsplit("/", 1)[-1]
        name = safe_name(base)
        if name.lower().endswith(".zip"):
            size = _size(fh)
            if size > limits.max_file_bytes:
                saver.reject(display, f"larger than the upload limit of {_mb(limits.max_file_bytes)}", size)
            else:
                _save_zip(saver, display, fh)
            continue
        rel = PurePosixPath(name) if name else None
        reason = saver.check(rel)
        if reason is not None or rel is None:
            saver.reject(display, reason or "no usable file name")
            continue
        saver.write(display, rel, _read_chunks(fh), limits.max_file_bytes)
    return saver.report


def _size(fh: BinaryIO) -> int:
    pos = fh.tell()
    end = fh.seek(0, os.SEEK_END)
    fh.seek(pos)
    return end
