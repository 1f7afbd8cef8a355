"""A zip-bomb check for Office files, which are zip archives (.docx, .pptx, .xlsx).

python-docx and python-pptx read a part's whole XML into memory and parse it into a tree, so a
60 KB .docx whose document.xml expands a thousandfold would take gigabytes and minutes. The
archive's directory declares every part's sizes, and `zipfile` never inflates more than the
declared size, so checking the declaration before a parser opens the file is enough.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from kbqa.errors import LoaderError

MAX_RATIO = 100
"""A part expanding more than this many times (and past RATIO_MIN_BYTES) is a bomb: real Office XML
compresses 5-30:1."""
RATIO_MIN_BYTES = 10 << 20
EXPANSION_PER_FILE_MB = 5
"""The parts together may expand to this many times `loaders.max_file_mb`."""


def check_office_zip(path: Path, max_file_mb: float) -> None:
    """Raise LoaderError if the archive at `path` would expand suspiciously; unreadable zips pass
    (the format's loader reports them with its own reason)."""
    try:
        with zipfile.ZipFile(path) as archive:
            parts = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError):
        return
    limit = max_file_mb * EXPANSION_PER_FILE_MB * (1 << 20)
    total = sum(p.file_size for p in parts)
    if total > limit:
        raise LoaderError(path, f"expands to {_mb(total)} when unzipped, over the limit of {_mb(limit)} "
                                f"({EXPANSION_PER_FILE_MB} × loaders.max_file_mb): a zip bomb? Not read")
    for part in parts:
        ratio = part.file_size / max(part.compress_size, 1)
        if part.file_size > RATIO_MIN_BYTES and ratio > MAX_RATIO:
            raise LoaderError(path, f"part {part.filename} expands {ratio:.0f}:1 to {_mb(part.file_size)}: "
                                    "looks like a zip bomb, not read")


def _mb(n: float) -> str:
    return f"{n / (1 << 20):.0f} MB"
