"""JSON (.json) and JSON Lines (.jsonl) → readable "path.to.key: value" lines.

A list of records (a top-level JSON array, or the lines of a .jsonl file) is cut
into groups of `table_rows_per_chunk` records, like table rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kbqa.config import LoaderSettings
from kbqa.errors import LoaderError
from kbqa.loaders.text import read_text
from kbqa.schema import LoadedFile, Section


def flatten(value: Any, prefix: str = "") -> Iterator[str]:
    """Yield "a.b[0].c: value" lines; a list of plain values stays on one line."""
    if isinstance(value, dict):
        if not value and prefix:
            return
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            shown = ", ".join(_scalar(v) for v in value if v is not None and v != "")
            if shown:
                yield f"{prefix}: {shown}" if prefix else shown
            return
        for index, item in enumerate(value):
            yield from flatten(item, f"{prefix}[{index}]")
    elif value is not None and value != "":
        yield f"{prefix}: {_scalar(value)}" if prefix else _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _records(records: list[Any], per_chunk: int) -> list[Section]:
    sections = []
    for start in range(0, len(records), per_chunk):
        blocks = ["\n".join(flatten(r)) for r in records[start : start + per_chunk]]
        text = "\n\n".join(b for b in blocks if b)
        if text:
            sections.append(Section(text=text))
    return sections


def load_json(path: Path, settings: LoaderSettings) -> LoadedFile:
    text, encoding, warnings = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoaderError(path, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except RecursionError as exc:
        raise LoaderError(path, "JSON nested too deeply to read") from exc
    if isinstance(data, list) and any(isinstance(v, (dict, list)) for v in data):
        sections = _records(data, settings.table_rows_per_chunk)
    else:
        body = "\n".join(flatten(data))
        sections = [Section(text=body)] if body else []
    if not sections:
        raise LoaderError(path, "JSON holds no values")
    return LoadedFile(sections=sections, warnings=warnings, encoding=encoding)


def load_jsonl(path: Path, settings: LoaderSettings) -> LoadedFile:
    text, encoding, warnings = read_text(path)
    records: list[Any] = []
    bad: list[int] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, RecursionError):
            bad.append(number)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" …" if len(bad) > 10 else "")
        warnings = [*warnings, f"{len(bad)} line(s) are not valid JSON and were skipped: {shown}"]
    sections = _records(records, settings.table_rows_per_chunk)
    if not sections:
        reason = "no valid JSON lines" if bad else "JSON Lines file holds no values"
        raise LoaderError(path, reason)
    return LoadedFile(sections=sections, warnings=warnings, encoding=encoding)
