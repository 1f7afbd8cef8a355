"""kbqa.encoding: picking the encoding of text files, and repairing cp1252 mojibake."""

from __future__ import annotations

import difflib
import random
import re
import socket
from collections.abc import Iterator

import ftfy
import pytest

from fixture_files import BIG5_TEXT, UTF16_TEXT, ZH_BACKUP, ZH_FACT, ZH_MANUAL, mojibake
from kbqa.encoding import decode_bytes, repair_mojibake, repair_mojibake_detail
from kbqa.errors import LoaderError

_HANZI = re.compile(r"[\u4e00-\u9fff]")
ORIGINAL = ZH_MANUAL + "\n" + ZH_BACKUP + "\nModel KX-7 notes: the café-grade filter costs €12 – see “Spare parts”.\n"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Encoding detection and repair must work offline (jieba, chardet, ftfy are local)."""

    def refuse(self: socket.socket, address: object) -> None:
        raise OSError(f"network blocked in test_encoding: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield


# ------------------------------------------------------------------ decode_bytes


GB18030_ONLY = ZH_FACT + "𠀀㐀"  # characters beyond GBK


@pytest.mark.parametrize(
    ("original", "codec", "expected"),
    [
        (ZH_MANUAL, "utf-8", "utf-8"),
        (ZH_MANUAL, "utf-8-sig", "utf-8-sig"),
        (ZH_MANUAL, "utf-16", "utf-16-le"),  # BOM
        (ZH_MANUAL, "utf-32", "utf-32-le"),
        (ZH_MANUAL, "utf-16-le", "utf-16-le"),  # no BOM: NUL-byte pattern
        (ZH_MANUAL, "utf-16-be", "utf-16-be"),
        (UTF16_TEXT, "utf-16-le", "utf-16-le"),
        (UTF16_TEXT, "utf-16-be", "utf-16-be"),
        (ZH_MANUAL, "gbk", "gb18030"),
        (ZH_FACT, "gbk", "gb18030"),  # one short sentence
        (GB18030_ONLY, "gb18030", "gb18030"),
        (BIG5_TEXT, "big5", "cp950"),
    ],
)
def test_decodes_chinese_encodings(original: str, codec: str, expected: str) -> None:
    text, used, warnings = decode_bytes(original.encode(codec), "f.txt")
    assert (text, used, warnings) == (original, expected, [])


def test_utf16_big_endian_bom() -> None:
    text, used, _ = decode_bytes(b"\xfe\xff" + ZH_MANUAL.encode("utf-16-be"), "f.txt")
    assert (text, used) == (ZH_MANUAL, "utf-16-be")


def test_decodes_western_codepage_with_a_note() -> None:
    text, used, _ = decode_bytes("Le café est très chaud. Ça coûte dix euros.".encode("cp1252"), "fr.txt")
    assert text == "Le café est très chaud. Ça coûte dix euros."
    assert used in ("windows-1252", "iso8859-15", "iso-8859-1", "iso8859-1", "cp1252")


def test_mostly_utf8_replaces_and_counts_bad_bytes() -> None:
    data = ZH_FACT.encode() * 3 + b"\xff\xfe" + ZH_FACT.encode()
    text, used, warnings = decode_bytes(data, "x.txt")
    assert used == "utf-8"
    assert text.count("\ufffd") == 1 and ZH_FACT in text
    assert warnings == ["2 undecodable bytes replaced"]


def test_empty_file_is_refused() -> None:
    with pytest.raises(LoaderError, match="empty file"):
        decode_bytes(b"", "empty.txt")


@pytest.mark.parametrize(
    "data",
    [
        random.Random(3).randbytes(4000),  # NULs at both parities
        b"\x01\x02\x03\x04abc\x05\x06" * 50,  # control characters, no NUL
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4,
    ],
    ids=["random", "controls", "png-like"],
)
def test_binary_data_is_refused(data: bytes) -> None:
    with pytest.raises(LoaderError, match="binary data"):
        decode_bytes(data, "blob.txt")


# ------------------------------------------------------------------ mojibake


def cjk_recovered(original: str, repaired: str) -> float:
    """Share of the original's hanzi found at the right place in `repaired` (difflib alignment)."""
    matcher = difflib.SequenceMatcher(None, original, repaired, autojunk=False)
    hits = sum(len(_HANZI.findall(original[a : a + n])) for a, _b, n in matcher.get_matching_blocks())
    return hits / len(_HANZI.findall(original))


@pytest.mark.parametrize("lost", ["ignore", "qmark"])
def test_mojibake_repair_beats_ftfy(lost: str) -> None:
    assert len(_HANZI.findall(ORIGINAL)) >= 500
    damaged = mojibake(ORIGINAL, lost)
    ours, codepage = repair_mojibake_detail(damaged)
    ftfy_score = cjk_recovered(ORIGINAL, ftfy.fix_text(damaged))
    our_score = cjk_recovered(ORIGINAL, ours)
    print(f"\nmojibake ({lost}): CJK recovered — ftfy.fix_text {ftfy_score:.3f}, kbqa {our_score:.3f}")
    assert codepage == "cp1252"
    assert our_score >= 0.9
    assert our_score > ftfy_score
    assert "café-grade filter costs €12 – see “Spare parts”" in ours  # Western text also restored


def test_mojibake_lossless_latin1_is_exact() -> None:
    damaged = ORIGINAL.encode("utf-8").decode("latin-1")
    assert repair_mojibake_detail(damaged) == (ORIGINAL, "latin-1")


def test_mojibake_cp1254_is_recognised() -> None:
    damaged = ZH_MANUAL.encode("utf-8").decode("cp1254", errors="ignore")
    repaired, codepage = repair_mojibake_detail(damaged)
    assert codepage == "cp1254"
    assert cjk_recovered(ZH_MANUAL, repaired) >= 0.9


def test_mojibake_with_replacement_characters() -> None:
    damaged = ZH_BACKUP.encode("utf-8").decode("cp1252", errors="replace")
    repaired, changed = repair_mojibake(damaged)
    assert changed and cjk_recovered(ZH_BACKUP, repaired) >= 0.95


@pytest.mark.parametrize(
    "clean",
    [
        ZH_MANUAL,
        BIG5_TEXT,
        "Plain ASCII text, nothing to see.",
        "Le café est très chaud. Ça coûte dix euros, s'il vous plaît.",
        "Größe und Gewicht: fünf Kilogramm, naïve façade, €100 – “quoted” — ™ ©2024",
        "Mixed 中文 and English, with emoji 🙂 and full-width ＡＢＣ，标点。",
    ],
)
def test_clean_text_is_never_touched(clean: str) -> None:
    assert repair_mojibake(clean) == (clean, False)
