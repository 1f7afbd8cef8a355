"""`kbqa eval`: retrieval and answer figures over a JSONL question set, with fakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kbqa import cli
from kbqa.eval import Question, answer_correct, load_questions
from kbqa.testing import FakeEmbeddings

QUESTIONS = [
    {"id": "q1", "question": "How do I start pump P-17?", "file": "pumps.txt", "pages": [1],
     "answer": "Prime it.", "must_contain": ["primed"], "unanswerable": False},
    {"id": "q2", "question": "Which valve do I open first?", "file": "pumps.txt", "pages": [2],
     "answer": "V3", "must_contain": ["V3"], "unanswerable": False},
    {"id": "q3", "question": "How do I install flatpak?", "file": None, "pages": None,
     "answer": "", "must_contain": [], "unanswerable": True},
]


def test_answer_correct_needs_every_string() -> None:
    q = Question("x", "?", "a.pdf", [1], "", ["\\toprule", "Bottom Rule"], False)
    assert answer_correct(q, "use \\toprule only") is False
    assert answer_correct(q, "use \\TOPRULE … bottom  rule") is True


def test_cli_eval_reports_retrieval_answers_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      fake_loaders) -> None:
    monkeypatch.setattr("kbqa.embeddings.make_embeddings", lambda _s: FakeEmbeddings())
    monkeypatch.setattr("kbqa.loaders.Loaders", lambda _s: fake_loaders)
    monkeypatch.setenv("KBQA_LLM__BACKEND", "fake")
    src = tmp_path / "docs"
    src.mkdir()
    (src / "pumps.txt").write_text("Pump P-17 must be primed before start-up.\fOpen valve V3 first.", "utf-8")
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("\n".join(json.dumps(q) for q in QUESTIONS) + "\n", "utf-8")
    assert len(load_questions(qfile)) == 3
    home = str(tmp_path / "home")
    runner = CliRunner()
    assert runner.invoke(cli.app, ["index", str(src), "--kb", "m", "--home", home]).exit_code == 0
    png = tmp_path / "chart.png"
    res = runner.invoke(cli.app, ["eval", str(qfile), "--kb", "m", "--home", home, "--json", "--verbose",
                                  "--plot", str(png)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["retrieval"]["questions"] == 2 and data["retrieval"]["hit@1"] == 1.0
    a = data["answers"]
    assert a["answerable"] == 2 and a["unanswerable"] == 1 and a["refusal_accuracy"] == 1.0
    assert a["answer_accuracy"] == 1.0 and a["citation_precision"] == 1.0 and a["false_refusal_rate"] == 0.0
    assert [r["id"] for r in data["per_question"]] == ["q1", "q2", "q3"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = runner.invoke(cli.app, ["eval", str(qfile), "--kb", "m", "--home", home, "--verbose"])
    assert "hit@5 1.000" in res.stdout and "refusal accuracy 1.000" in res.stdout and "q3" in res.stdout


def test_bad_question_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\n', "utf-8")
    res = CliRunner().invoke(cli.app, ["eval", str(bad), "--home", str(tmp_path)])
    assert res.exit_code == 2 and "bad.jsonl:1" in res.output
