"""The corpus of bad inputs of the reliability suite, built at test time (nothing is checked in).

`build_folder` writes a folder of documents a user might really have: broken, truncated and
encrypted PDFs, Office files that are zip bombs, binary data named .txt, broken encodings, a
100 MB one-line file, symlink loops, a FIFO, names that differ only in case or Unicode
normalisation — next to good files that must still be indexed. `upload_items` is what a hostile
or careless browser/HTTP client can send: names with `..`, absolute and drive paths, NUL bytes,
zip slip, zip bombs, deeply nested zips, symlink members.

Every entry says what must happen to it:

* ``fail``   — reported as failed/rejected, with a reason;
* ``report`` — either failed with a reason or indexed with a warning naming what was wrong;
* ``skip``   — not a regular file (links that lead nowhere, a FIFO): ignored, never followed or opened;
* ``good``   — indexed (the good files next to the bad ones, and odd but legal names).
"""

from __future__ import annotations

import io
import os
import random
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import fixture_files as ff

Expect = Literal["fail", "report", "skip", "good"]

GOOD_FACTS = {
    "good/pumps.txt": "Pump P-17 must be primed before start-up. Open valve V3, then press the green button.",
    "good/fans.md": "# Fans\n\nFan blades are cleaned monthly with a dry cloth. Never use water on the motor.",
    "good/保修.txt": "保修期为两年，自购买之日起计算。人为损坏不在保修范围内。",
}
BIG_MB = 100
NFC_NAME = unicodedata.normalize("NFC", "café-menu.txt")
NFD_NAME = unicodedata.normalize("NFD", "café-menu.txt")
UNDECODABLE = os.fsdecode(b"latin1-\xe9t\xe9.txt")
LOOPS = frozenset({"links/loop-a.txt", "links/loop-b.txt", "links/self.txt"})


@dataclass(frozen=True)
class Bad:
    name: str  # path relative to the corpus folder (or the upload name)
    expect: Expect
    what: str


def _rand(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _zip_bytes(members: list[tuple[str | zipfile.ZipInfo, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def office_bomb(good: Path, suffix_member: str, mb: int) -> bytes:
    """A valid .docx whose document.xml holds `mb` MB of tiny paragraphs (≈1000:1): a zip bomb."""
    buf = io.BytesIO()
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == suffix_member:
                head, _, tail = data.decode("utf-8").rpartition("</w:body>")
                part = zipfile.ZipInfo(info.filename)
                part.compress_type = zipfile.ZIP_DEFLATED
                with dst.open(part, "w", force_zip64=True) as out:
                    out.write(head.encode())
                    block = b"<w:p><w:r><w:t>bomb</w:t></w:r></w:p>" * 28_000  # ~1 MB
                    for _ in range(mb):
                        out.write(block)
                    out.write(("</w:body>" + tail).encode())
            else:
                dst.writestr(info, data)
    return buf.getvalue()


def _truncated_zip() -> bytes:
    data = _zip_bytes([("a.txt", _rand(12, 20_000)), ("b.txt", b"second member")])
    return data[: len(data) // 2]


def nested_zip(depth: int) -> bytes:
    data = _zip_bytes([("deepest.txt", b"The treasure is at the bottom of the well.")])
    for level in range(depth):
        data = _zip_bytes([(f"level{level}.zip", data)])
    return data


def zip_bomb(mb: int) -> bytes:
    """One member of `mb` MB of zeros (≈1000:1)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z, z.open("zeros.txt", "w", force_zip64=True) as out:
        block = bytes(1 << 20)
        for _ in range(mb):
            out.write(block)
    return buf.getvalue()


def build_folder_minimal(root: Path) -> None:
    """A good file and one whose name is not valid UTF-8 (Latin-1 bytes): kept apart, see its test."""
    root.mkdir(parents=True)
    (root / "pumps.txt").write_text(GOOD_FACTS["good/pumps.txt"])
    (root / UNDECODABLE).write_text("A file name that is not valid UTF-8.")


def build_folder(root: Path) -> list[Bad]:
    """Write the good files and the bad inputs under `root`; return what each entry must become."""
    items: list[Bad] = []

    def put(name: str, data: bytes, expect: Expect, what: str) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        items.append(Bad(name, expect, what))

    for name, text in GOOD_FACTS.items():
        put(name, text.encode("utf-8"), "good", "a good file next to the bad ones")

    # PDF
    pdf = root / "pdf"
    pdf.mkdir()
    ff.make_corrupt_pdf(pdf / "corrupt.pdf")
    items.append(Bad("pdf/corrupt.pdf", "fail", "corrupt PDF (noise between header and %%EOF)"))
    ff.make_truncated_pdf(pdf / "truncated.pdf")
    items.append(Bad("pdf/truncated.pdf", "report", "PDF cut to 40% (interrupted download)"))
    ff.make_encrypted_pdf(pdf / "encrypted.pdf")
    items.append(Bad("pdf/encrypted.pdf", "fail", "PDF encrypted with a user password"))
    put("pdf/not-a-pdf.pdf", b"<html><body>Sorry, the download failed.</body></html>", "fail",
        "an HTML error page saved as .pdf")
    put("pdf/zero-bytes.pdf", b"", "fail", "0-byte PDF")
    put("pdf/header-only.pdf", b"%PDF-1.7\n%%EOF\n", "fail", "PDF header and end marker, nothing else")
    # text and encodings
    put("text/empty.txt", b"", "fail", "0-byte text file")
    put("text/whitespace.txt", b" \n\t\r\n   \n", "fail", "only whitespace")
    ff.make_binary_txt(root / "text" / "binary.txt")
    items.append(Bad("text/binary.txt", "fail", "PNG bytes named .txt"))
    put("text/nul-only.log", bytes(4096), "fail", "4 KB of NUL bytes")
    put("text/control-chars.md", bytes(range(1, 9)) * 500, "fail", "control characters only")
    put("text/invalid-utf8.txt", b"The fan \xff\xfe runs \xc3\x28 at speed \x80 three.\n" * 20, "report",
        "UTF-8 with invalid byte sequences")
    mixed = (b"Maintenance log, kept in three editors over the years.\n"
             + "第一行：设备运行正常，温度稳定。\n".encode() * 5
             + "第二行：更换了过滤网和密封圈。\n".encode("gbk") * 5
             + "Café staff checked the boiler, température normale.\n".encode("latin-1") * 5)
    put("text/mixed-encodings.txt", mixed, "report", "UTF-8, GBK and Latin-1 lines in one file")
    put("text/bad-bom.txt", b"\xef\xbb\xbfStarts as UTF-8 \xff\xfe\xfd then breaks.", "report",
        "a UTF-8 byte-order mark followed by invalid bytes")
    put("text/odd-utf16.txt", b"\xff\xfe" + "UTF-16 text".encode("utf-16-le") + b"\x00\xd8", "report",
        "UTF-16 with a byte-order mark and a broken surrogate at the end")
    put("text/high-bytes.txt", bytes(range(0x80, 0x100)) * 40, "report", "bytes 0x80-0xFF only, no encoding fits")
    big = root / "text" / "one-line-100mb.txt"
    with big.open("wb") as fh:
        line = b"lorem ipsum dolor sit amet " * 40_000  # ≈1 MB, no newline anywhere
        for _ in range(BIG_MB):
            fh.write(line[: 1 << 20])
    items.append(Bad("text/one-line-100mb.txt", "fail", f"{BIG_MB} MB on one line"))
    put("text/one-line-256kb.txt", (b"word " * 60_000)[: 256 << 10], "good",
        "256 KB on one line, under the size limit: indexed (without hanging the splitter)")
    # Office
    docx = root / "office" / "good.docx"
    docx.parent.mkdir()
    ff.make_docx(docx)
    good_docx = docx.read_bytes()
    docx.unlink()
    put("office/corrupt.docx", _rand(3, 5000), "fail", "random bytes named .docx")
    put("office/truncated.docx", good_docx[: len(good_docx) // 2], "fail", "a .docx cut in half")
    put("office/zip-without-word.docx", _zip_bytes([("readme.txt", b"not a document")]), "fail",
        "a zip that is not an Office document")
    put("office/encrypted.docx", bytes.fromhex("d0cf11e0a1b11ae1") + _rand(4, 4000), "fail",
        "a password-protected .docx (an OLE container, not a zip)")
    tmp_docx = root / "office" / ".bomb-src.docx"
    tmp_docx.write_bytes(good_docx)
    put("office/zip-bomb.docx", office_bomb(tmp_docx, "word/document.xml", 50), "fail",
        "a .docx whose document.xml expands ~1000:1 to 50 MB")
    tmp_docx.unlink()
    put("office/corrupt.xlsx", _rand(5, 3000), "fail", "random bytes named .xlsx")
    put("office/corrupt.pptx", b"PK\x03\x04" + _rand(6, 3000), "fail", "a broken zip named .pptx")
    put("office/legacy.doc", bytes.fromhex("d0cf11e0a1b11ae1") + _rand(7, 2000), "fail", "old binary Word .doc")
    # structured text
    put("data/nested.json", b"[" * 100_000 + b"]" * 100_000, "fail", "JSON nested 100,000 deep")
    put("data/nested.html", b"<div>" * 100_000 + b"deep" + b"</div>" * 100_000, "report", "HTML nested 100,000 deep")
    put("data/malformed.json", b'{"title": "Broken", "body": "unterminated', "report", "JSON cut off mid-string")
    put("data/huge-field.csv", b'name,notes\n"pump","' + b"x" * 300_000 + b'"\n', "report",
        "a CSV cell of 300,000 characters")
    put("data/binary.csv", _rand(8, 3000).replace(b"\x00", b"\x01") + bytes(50), "fail", "random bytes named .csv")
    # archives and unknown types inside a folder
    put("archive.zip", _zip_bytes([("inside.txt", b"zip members are not read from folders")]), "fail",
        "a .zip inside the folder")
    put("deep.zip", nested_zip(20), "fail", "a zip nested 20 deep")
    put("program.exe", b"MZ" + _rand(9, 2000), "fail", "an executable")
    put("NOEXTENSION", b"a file with no extension", "fail", "no file extension")
    # names
    put("names/Guide.txt", b"The upper-case guide says: check the oil weekly.", "good", "case duplicate (Guide)")
    put("names/guide.txt", b"The lower-case guide says: check the tyres monthly.", "good", "case duplicate (guide)")
    put(f"names/{NFC_NAME}", b"The NFC menu lists espresso.", "good", "Unicode duplicate, NFC")
    put(f"names/{NFD_NAME}", b"The NFD menu lists cappuccino.", "good", "Unicode duplicate, NFD")
    put("names/line\nbreak.txt", b"A name with a newline in it still indexes.", "good", "newline in the file name")
    put("names/" + "长" * 80 + ".txt", b"A 240-byte file name.", "good", "a 244-byte UTF-8 file name")
    # links and special files
    links = root / "links"
    links.mkdir()
    os.symlink("loop-b.txt", links / "loop-a.txt")
    os.symlink("loop-a.txt", links / "loop-b.txt")
    os.symlink("self.txt", links / "self.txt")
    os.symlink("missing.txt", links / "dangling.txt")
    os.symlink("..", links / "up")  # a directory loop: links/up/links/up/...
    os.mkfifo(links / "pipe.txt")
    items += [Bad("links/loop-a.txt", "skip", "symlink loop a→b→a"), Bad("links/loop-b.txt", "skip", "symlink loop"),
              Bad("links/self.txt", "skip", "symlink to itself"), Bad("links/dangling.txt", "skip", "dangling link"),
              Bad("links/up", "skip", "directory symlink loop"), Bad("links/pipe.txt", "skip", "a FIFO named .txt")]
    return items


@dataclass(frozen=True)
class Upload:
    name: str  # what the client sends as the file name
    data: bytes
    expect: Literal["rejected", "inside", "members"]
    """rejected: refused with a reason; inside: saved strictly inside the knowledge folder (the
    name sanitised); members: a .zip whose members are each saved inside or rejected."""
    what: str


def upload_items(folder: list[Bad], root: Path) -> list[Upload]:
    """Hostile uploads (names, zips) plus every regular file of the folder corpus (except the 100 MB one)."""
    text = b"Uploaded safely: the sanitised copy of this file stays inside the knowledge folder."
    sym = zipfile.ZipInfo("link-to-passwd.txt")
    sym.external_attr = (0o120777 << 16)
    enc = zipfile.ZipInfo("encrypted-member.txt")
    enc.flag_bits |= 0x1
    liar = io.BytesIO(_zip_bytes([("liar.txt", b"x" * 5000)], zipfile.ZIP_STORED))
    raw = bytearray(liar.getvalue())  # declare 50 bytes in the central directory, store 5000
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24: cd + 28] = (50).to_bytes(4, "little")
    items = [
        Upload("../../escape.txt", text, "inside", "name with ../.."),
        Upload("/etc/absolute.txt", text, "inside", "absolute name"),
        Upload("C:\\Windows\\drive.txt", text, "inside", "Windows drive path"),
        Upload("nul\x00byte.txt", text, "inside", "NUL byte in the name"),
        Upload("CON.txt", text, "inside", "Windows device name"),
        Upload("..", text, "rejected", "name '..'"),
        Upload("../../../..", text, "rejected", "only '..' components"),
        Upload("", text, "rejected", "empty name"),
        Upload("\x00\x01.\x02", text, "rejected", "control characters only"),
        Upload("virus.exe", b"MZ" + _rand(10, 500), "rejected", "unsupported type"),
        Upload("slip.zip", _zip_bytes([
            ("../../zip-slip.txt", text), ("/abs/zip-abs.txt", text), ("C:/zip-drive.txt", text),
            ("..\\..\\zip-backslash.txt", text), ("sub/../../zip-dotdot.txt", text),
            ("Dup.txt", b"Upper-case duplicate."), ("dup.txt", b"Lower-case duplicate."),
            (f"nf/{NFC_NAME}", b"NFC member."), (f"nf/{NFD_NAME}", b"NFD member."),
            (sym, b"/etc/passwd"), (enc, b"secret"), ("inner.zip", b"PK\x05\x06" + bytes(18)),
        ]), "members", "zip slip, absolute/drive/backslash members, duplicates, a symlink, an encrypted member"),
        Upload("bomb.zip", zip_bomb(60), "members", "zip bomb: 60 MB of zeros in 60 KB"),
        Upload("deep.zip", nested_zip(20), "members", "zip nested 20 deep"),
        Upload("corrupt.zip", _rand(11, 4000), "rejected", "random bytes named .zip"),
        Upload("truncated.zip", _truncated_zip(), "rejected", "a zip cut in half"),
        Upload("many.zip", _zip_bytes([(f"f{i}.txt", b"x") for i in range(600)]), "rejected",
               "600 members, over the 500-file limit"),
        Upload("liar.zip", bytes(raw), "members", "a member lying about its size"),
    ]
    for bad in folder:
        path = root / bad.name
        if (bad.expect == "skip" or path.is_symlink() or not path.is_file() or path.suffix == ".zip"
                or path.stat().st_size > 10 << 20):
            continue
        items.append(Upload(bad.name, path.read_bytes(), "inside", f"folder corpus: {bad.what}"))
    return items
