"""Upload sanitisation: names, zip slip, zip bombs, limits, unsupported types, Unicode names."""

from __future__ import annotations

import io
import os
import stat
import unicodedata
import zipfile
from pathlib import Path

import pytest

from kbqa.loaders import Loaders
from kbqa.uploads import UploadError, UploadLimits, safe_name, safe_relpath, save_uploads

SUPPORTS = Loaders().supports


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("..", ""),
        ("../x.pdf", "_x.pdf"),  # '/' is reserved in one component; safe_relpath splits paths
        ("a\x00b.txt", "ab.txt"),
        ("tab\tname\r\n.md", "tabname.md"),
        ("con.txt", "_con.txt"),
        ("LPT1", "_LPT1"),
        ('what?<>:"|*.txt', "what_______.txt"),
        ("  .hidden.md. ", "hidden.md"),
        ("evil\u202egpj.pdf", "evilgpj.pdf"),  # bidi override dropped
        ("极光X2说明书.txt", "极光X2说明书.txt"),
    ],
)
def test_safe_name(raw: str, expected: str) -> None:
    assert safe_name(raw) == expected


def test_safe_name_nfc_and_length() -> None:
    decomposed = unicodedata.normalize("NFD", "café.md")
    assert safe_name(decomposed) == unicodedata.normalize("NFC", "café.md")
    long = safe_name("文" * 200 + ".pdf")
    assert long.endswith(".pdf") and len(long.encode()) <= 240


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd.txt", "etc/passwd.txt"),
        ("/abs/path/a.md", "abs/path/a.md"),
        ("C:\\Windows\\x.txt", "Windows/x.txt"),
        ("a/./b/../c.txt", "a/b/c.txt"),
        ("文档/说明.md", "文档/说明.md"),
        ("../..", None),
    ],
)
def test_safe_relpath(raw: str, expected: str | None) -> None:
    rel = safe_relpath(raw)
    assert (rel.as_posix() if rel else None) == expected


def test_plain_uploads_strip_directories_and_keep_chinese(tmp_path: Path) -> None:
    target = tmp_path / "kb"
    report = save_uploads(
        [("../../../escape.txt", b"a"), ("/etc/abs.md", b"b"), ("C:\\x\\win.txt", b"c"),
         ("nul\x00byte.txt", b"d"), ("极光说明书.txt", "内容".encode()), ("..", b"e")],
        target, SUPPORTS,
    )
    assert _all_files(target) == sorted(["escape.txt", "abs.md", "win.txt", "nulbyte.txt", "极光说明书.txt"])
    assert [r.reason for r in report.rejected] == ["no usable file name"]
    assert not any((tmp_path / n).exists() for n in ("escape.txt", "abs.md"))


def test_unsupported_types_rejected_others_saved(tmp_path: Path) -> None:
    report = save_uploads([("a.exe", b"MZ"), ("b.doc", b"x"), ("c.md", b"# ok"), ("noext", b"x")],
                          tmp_path / "kb", SUPPORTS)
    assert [r.saved_as for r in report.saved] == ["c.md"]
    reasons = {r.name: r.reason for r in report.rejected}
    assert "unsupported file type '.exe'" in reasons["a.exe"]
    assert "'(none)'" in reasons["noext"]
    assert set(reasons) == {"a.exe", "b.doc", "noext"}


def test_size_limit_per_file_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "kb"
    report = save_uploads([("big.txt", b"x" * 2000), ("small.txt", b"y")], target, SUPPORTS,
                          UploadLimits(max_file_bytes=1000))
    assert [r.name for r in report.rejected] == ["big.txt"]
    assert "upload limit" in report.rejected[0].reason
    assert os.listdir(target) == ["small.txt"]  # no temp file left over


def test_duplicate_names_in_one_request_are_not_overwritten(tmp_path: Path) -> None:
    report = save_uploads([("a/x.md", b"1"), ("b/x.md", b"2")], tmp_path, SUPPORTS)
    assert [r.saved_as for r in report.saved] == ["x.md", "x (2).md"]


def test_zip_keeps_folders_and_blocks_zip_slip(tmp_path: Path) -> None:
    target = tmp_path / "kb"
    data = _zip({"docs/a.md": b"a", "../../slip.txt": b"evil", "/abs.txt": b"abs", "docs\\win\\w.txt": b"w",
                 "__MACOSX/docs/._a.md": b"junk", "docs/.DS_Store": b"junk", "手册/说明.txt": "说明".encode(),
                 "inner.zip": _zip({"x.md": b"x"}), "tool.exe": b"MZ"})
    report = save_uploads([("folder.zip", data)], target, SUPPORTS)
    assert _all_files(target) == sorted(["docs/a.md", "slip.txt", "abs.txt", "docs/win/w.txt", "手册/说明.txt"])
    assert not (tmp_path / "slip.txt").exists()
    reasons = {r.name: r.reason for r in report.rejected}
    assert reasons == {"folder.zip/inner.zip": "nested .zip archives are not extracted",
                       "folder.zip/tool.exe": "unsupported file type '.exe'"}


def test_zip_symlink_into_outside_is_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "kb"
    target.mkdir()
    (target / "link").symlink_to(outside, target_is_directory=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("link/pwned.txt", b"x")
        info = zipfile.ZipInfo("sym.txt")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    report = save_uploads([("a.zip", buf.getvalue())], target, SUPPORTS)
    assert list(outside.iterdir()) == []
    assert {r.name: r.reason for r in report.rejected} == {
        "a.zip/link/pwned.txt": "would be written outside the knowledge folder",
        "a.zip/sym.txt": "symbolic links are not extracted",
    }


def test_zip_bomb_total_size_and_ratio(tmp_path: Path) -> None:
    bomb = _zip({"zeros.txt": b"\0" * (3 << 20)})
    assert len(bomb) < 20_000
    report = save_uploads([("bomb.zip", bomb)], tmp_path / "a", SUPPORTS, UploadLimits(max_file_bytes=1 << 20))
    assert "expands to 3.0 MB, over the upload limit of 1.0 MB" in report.rejected[0].reason
    report = save_uploads([("bomb.zip", bomb)], tmp_path / "b", SUPPORTS, UploadLimits(max_file_bytes=100 << 20))
    assert "suspicious compression ratio" in report.rejected[0].reason
    assert _all_files(tmp_path / "b") == []


def test_zip_member_lying_about_its_size_is_cut(tmp_path: Path) -> None:
    data = bytearray(_zip({"a.txt": b"y" * 5000}, zipfile.ZIP_STORED))
    # Patch the central directory's uncompressed size down to 10 bytes.
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    report = save_uploads([("liar.zip", bytes(data))], tmp_path, SUPPORTS)
    saved = _all_files(tmp_path)
    assert saved == [] or (tmp_path / "a.txt").stat().st_size <= 10
    assert len(report.results) == 1


def test_count_limit(tmp_path: Path) -> None:
    limits = UploadLimits(max_files=3)
    report = save_uploads([(f"{i}.txt", b"x") for i in range(5)], tmp_path / "a", SUPPORTS, limits)
    assert len(report.saved) == 3
    assert all("over the limit of 3 files" in r.reason for r in report.rejected)
    many = _zip({f"d/{i}.txt": b"x" for i in range(10)})
    report = save_uploads([("one.txt", b"x"), ("many.zip", many)], tmp_path / "b", SUPPORTS, limits)
    assert [r.saved_as for r in report.saved] == ["one.txt"]
    assert "holds 10 files, over the limit of 3 files per upload (2 left)" in report.rejected[0].reason


def test_bad_zip_is_a_per_file_rejection(tmp_path: Path) -> None:
    report = save_uploads([("broken.zip", b"PK\x03\x04garbage"), ("ok.md", b"# fine")], tmp_path, SUPPORTS)
    assert [r.saved_as for r in report.saved] == ["ok.md"]
    assert "not a readable .zip archive" in report.rejected[0].reason


def test_file_objects_and_replacing_existing(tmp_path: Path) -> None:
    save_uploads([("a.md", io.BytesIO(b"old"))], tmp_path, SUPPORTS)
    save_uploads([("a.md", io.BytesIO(b"new"))], tmp_path, SUPPORTS)
    assert (tmp_path / "a.md").read_bytes() == b"new"


def test_unusable_target_raises_kbqa_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UploadError, match="cannot use upload folder"):
        save_uploads([("a.md", b"x")], blocker / "kb", SUPPORTS)
