"""Tables (.csv, .tsv, .xlsx) → row groups of `table_rows_per_chunk` rows.

Each row is written as "column: value" lines, so every Section (and every chunk the
splitter cuts from it) still says which column a value belongs to: the header is
repeated in each group by construction. xlsx Sections carry the sheet name as heading.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from kbqa.config import LoaderSettings
from kbqa.errors import LoaderError
from kbqa.loaders.text import read_text
from kbqa.schema import LoadedFile, Section

_DELIMITERS = ",;\t|"


def render_row(header: Sequence[str], row: Sequence[str]) -> str:
    """One row as "column: value" lines; empty cells are left out."""
    lines = []
    for index, value in enumerate(row):
        if not value:
            continue
        name = header[index] if index < len(header) and header[index] else f"column {index + 1}"
        lines.append(f"{name}: {value}")
    return "\n".join(lines)


def table_sections(rows: Iterable[Sequence[str]], per_chunk: int, heading: str = "") -> list[Section]:
    """Header = the first non-empty row; the rest in groups of `per_chunk`, blank line between rows."""
    header: list[str] | None = None
    group: list[str] = []
    sections: list[Section] = []
    for raw in rows:
        row = [cell.strip() for cell in raw]
        if not any(row):
            continue
        if header is None:
            header = row
            continue
        group.append(render_row(header, row))
        if len(group) >= per_chunk:
            sections.append(Section(text="\n\n".join(group), heading=heading))
            group = []
    if group:
        sections.append(Section(text="\n\n".join(group), heading=heading))
    if header is not None and not sections:  # a header and no data rows: keep the column names
        sections.append(Section(text="columns: " + ", ".join(h for h in header if h), heading=heading))
    return sections


def load_csv(path: Path, settings: LoaderSettings) -> LoadedFile:
    text, encoding, warnings = read_text(path)
    if path.suffix.lower() == ".tsv":
        delimiter = "\t"
    else:
        try:
            delimiter = csv.Sniffer().sniff(text[:20000], delimiters=_DELIMITERS).delimiter
        except csv.Error:  # the sniffer gives up on one-column files and odd quoting
            delimiter = ","
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error as exc:
        raise LoaderError(path, f"malformed CSV ({exc})") from exc
    sections = table_sections(rows, settings.table_rows_per_chunk)
    if not sections:
        raise LoaderError(path, "no rows in the table")
    return LoadedFile(sections=sections, warnings=warnings, encoding=encoding)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time(0) else value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def load_xlsx(path: Path, settings: LoaderSettings) -> LoadedFile:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise LoaderError(path, f"not a readable Excel .xlsx file ({type(exc).__name__}: {exc})") from exc
    sections: list[Section] = []
    try:
        for sheet in workbook.worksheets:
            rows = ([_cell(v) for v in row] for row in sheet.iter_rows(values_only=True))
            sections.extend(table_sections(rows, settings.table_rows_per_chunk, heading=sheet.title))
    finally:
        workbook.close()
    if not sections:
        raise LoaderError(path, "no cells with values in any sheet")
    return LoadedFile(sections=sections)
