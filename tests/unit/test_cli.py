from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kbqa import cli
from kbqa.testing import FakeEmbeddings

runner = CliRunner()


@pytest.fixture(autouse=True)
def _fakes(monkeypatch: pytest.MonkeyPatch, fake_loaders) -> None:
    monkeypatch.setattr("kbqa.embeddings.make_embeddings", lambda _settings: FakeEmbeddings())
    monkeypatch.setattr("kbqa.loaders.Loaders", lambda _settings: fake_loaders)


def _src(tmp_path: Path) -> Path:
    src = tmp_path / "docs"
    src.mkdir()
    (src / "a.txt").write_text("Pump P-17 must be primed before start-up.\fValve V3 opens clockwise.", "utf-8")
    (src / "bad.txt").write_bytes(b"")
    return src


def test_index_search_json_and_exit_codes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    res = runner.invoke(cli.app, ["index", str(_src(tmp_path)), "--kb", "m", "--home", str(home), "--json"])
    assert res.exit_code == 1, res.output  # bad.txt failed
    report = json.loads(res.stdout)
    assert report["counts"]["added"] == 1 and report["counts"]["failed"] == 1
    assert report["files"][1]["reason"] == "empty file"
    res = runner.invoke(cli.app, ["search", "which way does valve V3 open", "--kb", "m", "--home", str(home),
                                  "--json", "-k", "1"])
    assert res.exit_code == 0, res.output
    (src,) = json.loads(res.stdout)["sources"]
    assert set(src) == {"n", "file", "path", "page", "heading", "score", "text"}
    assert src["file"] == "a.txt" and src["page"] == 2 and src["path"] == "knowledge/m/a.txt"


def test_human_output_and_kb_commands(tmp_path: Path) -> None:
    home = tmp_path / "home"
    res = runner.invoke(cli.app, ["index", str(_src(tmp_path)), "--kb", "m", "--home", str(home)])
    assert "Index report" in res.stdout and "empty file" in res.stdout
    res = runner.invoke(cli.app, ["search", "pump", "--kb", "m", "--home", str(home)])
    assert "[1] a.txt p.1" in res.stdout
    res = runner.invoke(cli.app, ["kb", "list", "--home", str(home)])
    assert res.stdout.split() == ["m"]
    res = runner.invoke(cli.app, ["kb", "info", "m", "--home", str(home), "--json"])
    assert json.loads(res.stdout)["chunks"] >= 2
    res = runner.invoke(cli.app, ["remove", "a.txt", "--kb", "m", "--home", str(home)])
    assert res.exit_code == 0 and "removed a.txt" in res.stdout
    res = runner.invoke(cli.app, ["kb", "delete", "m", "--yes", "--home", str(home)])
    assert res.exit_code == 0 and not (home / "knowledge/m").exists()


def test_user_errors_are_one_line_not_tracebacks(tmp_path: Path) -> None:
    res = runner.invoke(cli.app, ["search", "x", "--kb", "missing", "--home", str(tmp_path)])
    assert res.exit_code == 2
    assert "no knowledge base 'missing'" in res.stderr and "Traceback" not in res.stderr
    res = runner.invoke(cli.app, ["index", str(tmp_path / "nowhere"), "--home", str(tmp_path)])
    assert res.exit_code == 2 and "no such file or folder" in res.stderr


def test_migrate_moves_vectors_between_backends_and_back(tmp_path: Path) -> None:
    pytest.importorskip("pymilvus", reason="pymilvus is not installed")
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")
    home = tmp_path / "home"
    runner.invoke(cli.app, ["index", str(_src(tmp_path)), "--kb", "m", "--home", str(home), "--json"])
    query = ["search", "which way does valve V3 open", "--kb", "m", "--home", str(home), "--json"]
    before = json.loads(runner.invoke(cli.app, query).stdout)["sources"]
    res = runner.invoke(cli.app, ["migrate", "--kb", "m", "--to", "milvus-lite", "--home", str(home), "--json"])
    assert res.exit_code == 0, res.output
    moved = json.loads(res.stdout)
    assert moved["from"] == "faiss" and moved["to"] == "milvus-lite://vectors.milvus.db" and moved["vectors"] >= 2
    assert not (home / "vector_store/m/vectors.faiss").exists()
    assert json.loads(runner.invoke(cli.app, query).stdout)["sources"] == before
    info = json.loads(runner.invoke(cli.app, ["kb", "info", "m", "--home", str(home), "--json"]).stdout)
    assert info["vectors"] == "milvus-lite://vectors.milvus.db"
    res = runner.invoke(cli.app, ["migrate", "--kb", "m", "--to", "faiss", "--home", str(home)])
    assert res.exit_code == 0 and "moved from milvus-lite://vectors.milvus.db to faiss" in res.stdout
    assert json.loads(runner.invoke(cli.app, query).stdout)["sources"] == before
    res = runner.invoke(cli.app, ["migrate", "--kb", "m", "--to", "ftp://nowhere", "--home", str(home)])
    assert res.exit_code == 2 and "not a vector store URI" in res.stderr
