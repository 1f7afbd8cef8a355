"""Bytes → text for text-like files, and repair of UTF-8 mojibake.

Why this is more than `data.decode()`: Chinese documents arrive as UTF-8, GBK/GB18030,
Big5 or UTF-16 (often without a BOM), and some have been through a tool that read UTF-8
as Windows-1252 and saved the result ("æœ¬è®¾å¤‡" for "本设备"), losing the five bytes
cp1252 does not define. `decode_bytes` picks the encoding; `repair_mojibake` (engine in
`kbqa.loaders.mojibake`) undoes that damage, inferring the lost bytes, which ftfy cannot do.
"""

from __future__ import annotations

import codecs
import re
from typing import NoReturn

import chardet

from kbqa.errors import LoaderError
from kbqa.loaders.mojibake import in_gb2312, repair_mojibake, repair_mojibake_detail

__all__ = ["decode_bytes", "repair_mojibake", "repair_mojibake_detail"]

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_SAMPLE = 64 * 1024
_CHARDET_MIN_CONFIDENCE = 0.3
# chardet names a family; decode with the superset that Windows actually writes.
_SUPERSETS: dict[str, tuple[str, ...]] = {
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "gb18030": ("gb18030",),
    "big5": ("cp950", "big5hkscs"),
    "cp950": ("cp950", "big5hkscs"),
    "shift_jis": ("cp932",),
    "euc-kr": ("cp949",),
    "ascii": ("utf-8",),
}
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\b\x1b")


# ----------------------------------------------------------------- decoding


def _common_char(ch: str) -> bool:
    """Characters real text is made of; a wrong UTF-16 byte order gives mostly others."""
    code = ord(ch)
    return (
        0x20 <= code < 0x7F
        or ch in "\t\n\r\f"
        or 0xC0 <= code <= 0x17F
        or 0x3000 <= code <= 0x30FF
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xFF00 <= code <= 0xFFEF
        or 0x2000 <= code <= 0x206F
        or 0xAC00 <= code <= 0xD7AF
    )


def _utf16_without_bom(data: bytes) -> str | None:
    """'utf-16-le' / 'utf-16-be' if one byte order decodes the sample to ordinary text.

    Called only when the data has NUL bytes (ASCII characters in UTF-16 have one);
    UTF-16 without a BOM and without a single ASCII character is not recognised,
    because Shift-JIS or GBK read as UTF-16 can also look like CJK text.
    """
    sample = data[: min(len(data), _SAMPLE) // 2 * 2]
    if not sample:
        return None
    best: tuple[float, str] | None = None
    for codec in ("utf-16-le", "utf-16-be"):
        try:
            text = sample.decode(codec)
        except UnicodeDecodeError:
            continue
        share = sum(1 for ch in text if _common_char(ch)) / len(text)
        if share >= 0.95 and (best is None or share > best[0]):
            best = (share, codec)
    return best[1] if best else None


def _mostly_utf8(data: bytes) -> bool:
    """Valid UTF-8 apart from a few bad bytes (≥ 90% of non-ASCII bytes decode)."""
    text = data[:_SAMPLE].decode("utf-8", errors="surrogateescape")
    bad = sum(1 for ch in text if "\udc80" <= ch <= "\udcff")
    good = sum(len(ch.encode("utf-8")) for ch in text if ch >= "\x80" and not "\udc80" <= ch <= "\udcff")
    return good > 0 and good / (good + bad) >= 0.9


def _decode_utf16(data: bytes) -> tuple[str, str, list[str]] | None:
    codec = _utf16_without_bom(data)
    if codec is None:
        return None
    even = data[: len(data) // 2 * 2]
    try:
        text = even.decode(codec)
    except UnicodeDecodeError:  # the sample was fine, a later part is not
        text = even.decode(codec, errors="replace")
    return text, codec, (["odd trailing byte dropped"] if len(data) % 2 else [])


def _raise(error: Exception) -> NoReturn:
    raise error


def _looks_binary(data: bytes) -> bool:
    """Many control bytes (NULs are handled before): not text in any encoding we read."""
    sample = data[:_SAMPLE]
    controls = sum(1 for b in sample if b < 0x20 and b not in _TEXT_CONTROLS)
    return controls / len(sample) > 0.05


def _looks_chinese(text: str) -> bool:
    """Most non-ASCII characters are GB2312 hanzi/punctuation (common simplified Chinese)."""
    wide = [ch for ch in text[:20000] if ord(ch) > 0x7F]
    if not wide:
        return False
    common = sum(1 for ch in wide if in_gb2312(ch))
    return common / len(wide) >= 0.8


def _try(data: bytes, codecs_: tuple[str, ...]) -> tuple[str, str] | None:
    for codec in codecs_:
        try:
            return data.decode(codec), codec
        except (UnicodeDecodeError, LookupError):
            continue
    return None


def _utf8_replacing(data: bytes) -> tuple[str, int]:
    """Decode UTF-8, replacing bad bytes with U+FFFD; also return how many bytes were bad."""
    text = data.decode("utf-8", errors="surrogateescape")
    bad = 0

    def _sub(match: re.Match[str]) -> str:
        nonlocal bad
        bad += len(match.group())
        return "\ufffd"

    return re.sub("[\udc80-\udcff]+", _sub, text), bad


def _decode_mixed_lines(data: bytes) -> tuple[str, str, list[str]] | None:
    """Decode line by line a file that several editors appended to: some lines UTF-8, others GBK or
    Windows-1252 (a log or a notes file). None unless at least two lines are non-ASCII UTF-8 and
    other lines are not; and a file that is all GB18030 Chinese is left to the whole-file decoders.
    """
    lines = data.splitlines(keepends=True)
    utf8_lines = sum(1 for line in lines if not line.isascii() and _try(line, ("utf-8",)))
    if utf8_lines < 2 or utf8_lines == sum(1 for line in lines if not line.isascii()):
        return None
    whole_gb = _try(data, ("gb18030",))
    if whole_gb and _looks_chinese(whole_gb[0]):
        return None
    out: list[str] = []
    used: dict[str, int] = {}
    for line in lines:
        if line.isascii():
            out.append(line.decode("ascii"))
            continue
        decoded = _try(line, ("utf-8",))
        if decoded is None:
            gb = _try(line, ("gb18030",))
            decoded = gb if gb and _looks_chinese(gb[0]) else _try(line, ("cp1252", "latin-1"))
        assert decoded is not None  # latin-1 decodes any bytes
        out.append(decoded[0])
        used[decoded[1]] = used.get(decoded[1], 0) + 1
    summary = ", ".join(f"{codec} ({n} line{'s' if n != 1 else ''})" for codec, n in used.items())
    return "".join(out), "mixed", [f"mixed encodings, decoded line by line: {summary}"]


def decode_bytes(data: bytes, name: str) -> tuple[str, str, list[str]]:
    """Decode a text file's bytes; return (text, encoding used, warnings).

    Order: BOM → UTF-16 without BOM if there are NUL bytes (else: binary) → refuse
    control-heavy data → strict UTF-8 → UTF-8 with a few bad bytes → line by line when some
    lines are UTF-8 and others are not (mixed encodings) → chardet guess
    (GB2312/GBK read as GB18030, Big5 as cp950) → GB18030 → a low-confidence chardet
    guess → UTF-8 with replacement (the warning counts the bad bytes).
    Raises LoaderError for an empty file and for binary data.
    """
    if not data:
        raise LoaderError(name, "empty file")
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(codec), codec + ("-sig" if codec == "utf-8" else ""), []
            except UnicodeDecodeError as exc:
                reason = f"starts with a {codec} byte-order mark but is not valid {codec}: {exc}"
                raise LoaderError(name, reason) from exc
    binary = LoaderError(name, "looks like binary data, not text (NUL bytes or many control characters)")
    if b"\x00" in data[:_SAMPLE]:  # NUL is valid UTF-8, so UTF-16 must be tried first
        return _decode_utf16(data) or _raise(binary)
    if _looks_binary(data):
        raise binary
    try:
        return data.decode("utf-8"), "utf-8", []
    except UnicodeDecodeError:
        pass
    if _mostly_utf8(data):
        text, bad = _utf8_replacing(data)
        return text, "utf-8", [f"{bad} undecodable byte{'s' if bad != 1 else ''} replaced"]
    mixed = _decode_mixed_lines(data)
    if mixed is not None:
        return mixed
    guess = chardet.detect(data[:_SAMPLE])
    family = (guess.get("encoding") or "").lower()
    confidence = float(guess.get("confidence") or 0.0)
    guessed = _try(data, _SUPERSETS.get(family, (family,))) if family else None
    gb = _try(data, ("gb18030",))
    if guessed and confidence >= _CHARDET_MIN_CONFIDENCE:
        single_byte = guessed[1] not in {c for group in _SUPERSETS.values() for c in group}
        if single_byte and gb and _looks_chinese(gb[0]):
            return gb[0], gb[1], []
        return guessed[0], guessed[1], []
    if gb and (_looks_chinese(gb[0]) or not guessed):
        return gb[0], gb[1], []
    if guessed:
        return guessed[0], guessed[1], [f"encoding guessed as {guessed[1]} (low confidence {confidence:.2f})"]
    text, bad = _utf8_replacing(data)
    return text, "utf-8", [f"{bad} undecodable byte{'s' if bad != 1 else ''} replaced (encoding unknown)"]
