"""The browser app's page logic (streamlit AppTest, fake embeddings and LLM), its launcher and helpers."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from fixture_files import MANUAL_OUTLINE, MANUAL_PAGES, make_text_pdf
from kbqa import ui_launch
from kbqa.errors import ConfigError, KbqaError, LLMError
from kbqa.kb import KnowledgeBase
from kbqa.preview import passage_span, render_page_png
from kbqa.ui_text import EN, TEXT, ZH

APP = Path(__file__).resolve().parents[2] / "app.py"
QUESTION = "How much water must the pump be primed with before the first start?"


@pytest.fixture(autouse=True)
def _served_on_loopback() -> Iterator[None]:
    """AppTest has no server: tell the app it is bound where `kbqa ui` binds it."""
    from streamlit import config

    before = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    yield
    config.set_option("server.address", before)


@pytest.fixture
def app_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("KBQA_HOME", str(home))
    monkeypatch.setenv("KBQA_EMBEDDING__MODEL", "fake")
    monkeypatch.setenv("KBQA_LLM__BACKEND", "fake")
    monkeypatch.setenv("KBQA_UI__LANGUAGE", "en")
    return home


def _app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for kind in (at.success, at.warning, at.error, at.info) for e in kind]
    return "\n".join(str(p) for p in parts)


def _create_kb(at: AppTest, name: str) -> None:
    at.text_input(key="new_kb_name").input(name)
    at.button(key="create_kb").click().run()
    assert not at.exception, at.exception
    assert at.session_state["kb"] == name


def _upload(at: AppTest, files: list[tuple[str, bytes, str]]) -> None:
    at.sidebar.file_uploader[0].set_value(files).run()
    at.button(key="index_uploads").click().run()
    assert not at.exception, at.exception


def _ask(at: AppTest, question: str) -> None:
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception


@pytest.fixture
def manual_pdf(tmp_path: Path) -> bytes:
    return make_text_pdf(tmp_path / "manual.pdf", MANUAL_PAGES, outline=True,
                         outline_entries=MANUAL_OUTLINE).read_bytes()


@pytest.fixture
def ready(app_home: Path, manual_pdf: bytes) -> AppTest:
    """An app with knowledge base 'manuals' holding manual.pdf (the priming fact is on page 2)."""
    at = _app()
    _create_kb(at, "manuals")
    _upload(at, [("manual.pdf", manual_pdf, "application/pdf")])
    return at


def test_first_start_indexes_the_default_kb(app_home: Path) -> None:
    folder = app_home / "knowledge" / "samples"
    folder.mkdir(parents=True)
    (folder / "faq.md").write_text("# FAQ\n\nDescale the machine every 300 cups.\n", encoding="utf-8")
    at = _app()
    assert at.session_state["kb"] == "samples"
    assert "faq.md" in _texts(at)
    assert any("1 new" in s.value for s in at.sidebar.success)
    assert [r["file"] for r in KnowledgeBase.open("samples").files()] == ["faq.md"]


def test_no_kb_yet_invites_to_create_one(app_home: Path) -> None:
    at = _app()
    assert "No knowledge base yet" in _texts(at)
    assert not at.chat_input


def test_create_upload_ask_and_cite(ready: AppTest, manual_pdf: bytes) -> None:
    at = ready
    _upload(at, [("guide.md", b"# Guide\n\nThe filter is cleaned monthly.\n", "text/markdown"),
                 ("../evil.exe", b"MZ", "application/octet-stream"), ("manual.pdf", manual_pdf, "application/pdf")])
    page = _texts(at)
    assert "evil.exe" in page and "unsupported file type '.exe'" in page  # rejected, others indexed
    assert "manual.pdf" in page and "guide.md" in page and "unchanged" in page
    assert not (Path(KnowledgeBase.open("manuals").knowledge_dir).parent / "evil.exe").exists()
    sidebar = "\n".join(m.value for m in at.sidebar.markdown)
    assert "`fake-hash-64` · 64-d" in sidebar and "2 files · " in sidebar and "`fake`" in sidebar  # model + index

    _ask(at, QUESTION)
    user, assistant = at.chat_message
    assert user.markdown[0].value.startswith("How much water")
    answer = assistant.markdown[0].value
    assert answer.startswith("2 Installation") and ":blue-badge[1]" in answer  # the fake LLM quotes [1]
    labels = [e.label for e in assistant.expander]
    assert labels[0].startswith("[1] manual.pdf · page 2 · relevance ")
    assert any("written by fake" in c.value for c in assistant.caption)

    at.toggle(key="pg_1_1").set_value(True).run()  # render the cited PDF page
    assert not at.exception, at.exception
    first_source = at.chat_message[1].expander[0]
    assert [type(e).__name__ for e in first_source][-1] == "Image"


def test_refused_answer_is_a_clear_message(ready: AppTest) -> None:
    at = ready
    at.slider(key="min_score").set_value(1.0).run()
    _ask(at, "Who won the 1998 football world cup?")
    assistant = at.chat_message[1]
    assert assistant.markdown[0].value == "**Not found in the knowledge base.**"
    assert "lower the relevance threshold" in assistant.caption[0].value
    assert not assistant.expander


def test_multi_turn_history_and_clear_chat(ready: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    original = KnowledgeBase.ask_stream

    def recording(self: KnowledgeBase, question: str, history: Any = None, **kw: Any) -> Iterator[Any]:
        seen.append((question, list(history or []), kw))
        return original(self, question, history, **kw)

    monkeypatch.setattr(KnowledgeBase, "ask_stream", recording)
    at = ready
    at.slider(key="top_k").set_value(3).run()
    _ask(at, QUESTION)
    _ask(at, "And how often is the inlet filter cleaned?")
    assert len(at.chat_message) == 4
    assert seen[0][1] == [] and seen[0][2]["k"] == 3
    assert [m["role"] for m in seen[1][1]] == ["user", "assistant"]
    assert seen[1][1][0]["content"] == QUESTION

    at.button(key="clear_chat").click().run()
    assert not at.chat_message
    assert "Ask anything about “manuals”" in _texts(at)


def test_library_error_is_shown_not_raised(ready: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(self: KnowledgeBase, *a: Any, **kw: Any) -> Iterator[Any]:
        raise LLMError("bundled: model file missing")

    monkeypatch.setattr(KnowledgeBase, "ask_stream", failing)
    at = ready
    _ask(at, QUESTION)
    assert "Something went wrong: bundled: model file missing" in at.chat_message[1].error[0].value


def test_delete_file(ready: AppTest) -> None:
    at = ready
    at.button(key="del_manual.pdf").click().run()
    assert not at.exception, at.exception
    assert KnowledgeBase.open("manuals").files() == []
    assert "No documents yet" in _texts(at)


def test_zip_upload_keeps_folders(app_home: Path, manual_pdf: bytes) -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("docs/pump/manual.pdf", manual_pdf)
        zf.writestr("../../outside.md", "# escaped?")
    at = _app()
    _create_kb(at, "zipped")
    _upload(at, [("folder.zip", buf.getvalue(), "application/zip")])
    files = sorted(r["file"] for r in KnowledgeBase.open("zipped").files())
    assert files == ["docs/pump/manual.pdf", "outside.md"]
    assert not (app_home / "knowledge" / "outside.md").exists()


def test_invalid_kb_name_is_a_message(app_home: Path) -> None:
    at = _app()
    at.text_input(key="new_kb_name").input("../bad name")
    at.button(key="create_kb").click().run()
    assert not at.exception
    assert any("invalid knowledge base name" in t.value for t in at.toast)


def test_password_gate(app_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KBQA_UI__PASSWORD", "open sesame")
    at = _app()
    assert not at.chat_input and not at.sidebar.selectbox
    at.text_input(key="password_input").input("wrong")
    at.button[0].click().run()
    assert "Wrong password." in [e.value for e in at.error]
    at.text_input(key="password_input").input("open sesame")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert at.session_state["authed"] is True
    assert "No knowledge base yet" in _texts(at)


def test_exposed_without_password_refuses(app_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit import config

    config.set_option("server.address", "0.0.0.0")
    at = _app()
    assert "no password is set" in at.error[0].value and "kbqa ui" in at.error[0].value
    assert not at.sidebar.selectbox and not at.chat_input
    monkeypatch.setenv("KBQA_UI__PASSWORD", "pw")
    at = _app()
    assert at.text_input(key="password_input")  # the gate, not the refusal


def test_interrupted_answer_is_marked_and_left_out_of_history(ready: AppTest, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    seen: list[Any] = []
    original = KnowledgeBase.ask_stream

    def recording(self: KnowledgeBase, question: str, history: Any = None, **kw: Any) -> Iterator[Any]:
        seen.append(list(history or []))
        return original(self, question, history, **kw)

    monkeypatch.setattr(KnowledgeBase, "ask_stream", recording)
    at = ready
    _ask(at, QUESTION)
    at.session_state["chats"]["manuals"].append({"role": "user", "content": "cut short"})  # a rerun hit mid-answer
    at.run()
    assert at.chat_message[3].caption[0].value == "The answer was interrupted. Ask again to get it."
    _ask(at, "And the filter?")
    assert seen[-1][0]["content"] == QUESTION and len(seen[-1]) == 2


def test_language_toggle_and_setting(app_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KBQA_UI__LANGUAGE", "zh")
    at = _app()
    assert "还没有知识库" in _texts(at)
    at.button_group(key="lang").set_value("en").run()
    assert "No knowledge base yet" in _texts(at)


def test_ui_text_languages_have_the_same_keys() -> None:
    assert set(EN) == set(ZH)
    assert set(TEXT) == {"en", "zh"}


# -- helpers the app relies on -----------------------------------------------------------
def test_passage_span_ignores_whitespace_and_case() -> None:
    page = "Title\r\nThe pump must be primed with 2 litres\r\nof water before the first start. Other text."
    first, last = passage_span(page, "the pump must be primed with 2 litres of water before the first start.") or (0, 0)
    assert page[first:last + 1] == "The pump must be primed with 2 litres\r\nof water before the first start."
    assert passage_span(page, "nothing like it appears here at all") is None


def test_render_page_png(tmp_path: Path) -> None:
    pdf = make_text_pdf(tmp_path / "m.pdf", MANUAL_PAGES, outline=False)
    png = render_page_png(pdf, 2, "primed with 2 litres of water")
    assert png.startswith(b"\x89PNG")
    with pytest.raises(KbqaError, match="no page 9"):
        render_page_png(pdf, 9)


# -- launcher -----------------------------------------------------------------------------
@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True),
                                                ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                                ("", False), ("192.168.1.5", False), ("example.com", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert ui_launch.is_loopback(host) is loopback


def test_launch_refuses_exposed_host_without_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KBQA_UI__PASSWORD", raising=False)
    monkeypatch.setattr(subprocess, "call", lambda *a, **kw: pytest.fail("must not start streamlit"))
    with pytest.raises(ConfigError, match="without a password"):
        ui_launch.launch("0.0.0.0", 8501, None, tmp_path)


def test_launch_runs_streamlit_on_the_given_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, env: calls.append((cmd, env)) or 0)
    monkeypatch.setenv("KBQA_UI__PASSWORD", "pw")
    assert ui_launch.launch("0.0.0.0", 8600, None, tmp_path) == 0
    cmd, env = calls[0]
    assert cmd[1:4] == ["-m", "streamlit", "run"] and Path(cmd[4]) == APP
    joined = " ".join(cmd)
    assert "--server.address 0.0.0.0" in joined and "--server.port 8600" in joined
    assert "--server.headless true" in joined and "--browser.gatherUsageStats false" in joined
    assert env["KBQA_HOME"] == str(tmp_path.resolve())
    with pytest.raises(ConfigError, match="out of range"):
        ui_launch.launch("127.0.0.1", 70000, None, tmp_path)
