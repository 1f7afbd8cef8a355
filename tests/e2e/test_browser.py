"""End to end in a real browser: `streamlit run app.py` + headless Chromium (Debian's, via Playwright).

Creates a knowledge base, uploads a PDF, waits for indexing, asks a question whose answer is
on page 2 and checks the answer cites that PDF and page; then opens the source and renders
the page. Uses the real bundled models (embeddings + LLM). Screenshots go to the test's tmp
dir; the last one is also copied to /tmp/kbqa-shots/ for people to look at.

Needs a Chromium binary (`.ci/install-browser.sh` installs Debian's); skipped without one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixture_files import MANUAL_OUTLINE, MANUAL_PAGES, make_text_pdf
from kbqa.ui_launch import find_app, streamlit_command

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_network")]

CHROMIUM = next((p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))), None)
SHOTS = Path("/tmp/kbqa-shots")
QUESTION = "How much water must the pump be primed with before the first start?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """The app on a free loopback port, with an empty KBQA_HOME."""
    home = tmp_path / "home"
    home.mkdir()
    port = _free_port()
    env = dict(os.environ, KBQA_HOME=str(home), KBQA_UI__LANGUAGE="en")
    # llama.cpp on every core stalls (30x slower measured) as soon as anything else wants a core,
    # here the browser on the same machine; one thread keeps the answer time predictable.
    env.setdefault("KBQA_LLM__THREADS", "1")
    log = open(tmp_path / "streamlit.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(streamlit_command(find_app(), "127.0.0.1", port), env=env, cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"streamlit did not start: {(tmp_path / 'streamlit.log').read_text()[-2000:]}")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (run .ci/install-browser.sh)")
def test_upload_index_ask_cite(server: str, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    pdf = make_text_pdf(tmp_path / "pump-manual.pdf", MANUAL_PAGES, outline=True, outline_entries=MANUAL_OUTLINE)
    shots: list[Path] = []

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1440, "height": 1000}, locale="en-US")
        expect = sync_api.expect

        def shot(name: str) -> None:
            path = tmp_path / f"{len(shots) + 1:02d}-{name}.png"
            page.screenshot(path=str(path))
            shots.append(path)

        def settle() -> None:
            """Wait until the script run is over (the 'running' indicator is gone)."""
            page.wait_for_timeout(300)
            expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=120_000)

        try:
            page.goto(server)
            sidebar = page.get_by_test_id("stSidebar")
            expect(page.get_by_text("No knowledge base yet")).to_be_visible(timeout=120_000)
            settle()
            shot("empty")

            sidebar.get_by_label("Name").fill("manuals")
            sidebar.get_by_role("button", name="Create").click()
            expect(sidebar.get_by_text("No documents yet")).to_be_visible(timeout=60_000)

            sidebar.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(pdf))
            sidebar.get_by_role("button", name="Index 1 file(s)").click()
            expect(sidebar.get_by_text("Indexing finished ·")).to_be_visible(timeout=120_000)
            settle()
            expect(sidebar.locator("strong", has_text="pump-manual.pdf")).to_be_visible()
            expect(sidebar.get_by_text("indexed · 3 chunks")).to_be_visible()
            shot("indexed")

            page.get_by_test_id("stChatInputTextArea").fill(QUESTION)
            page.keyboard.press("Enter")
            main = page.get_by_test_id("stMainBlockContainer")
            cited = main.get_by_test_id("stExpander").filter(has_text="pump-manual.pdf · page 2")
            expect(cited.first).to_be_visible(timeout=120_000)
            settle()
            answer = main.get_by_test_id("stChatMessage").nth(1)
            expect(answer.get_by_text("Sources", exact=True)).to_be_visible()
            assert "[1] pump-manual.pdf · page 2" in answer.inner_text()
            shot("answer")

            cited.first.locator("summary").click()
            # Opening the source reruns the script; a click that lands mid-rerun is dropped by the
            # browser session, so wait for the run to end, as a person sees the page settle.
            settle()
            toggle = cited.first.get_by_role("switch", name="Show the page")
            cited.first.get_by_text("Show the page").click()
            expect(toggle).to_be_checked(timeout=30_000)
            expect(cited.first.get_by_role("img")).to_be_visible(timeout=60_000)
            settle()
            cited.first.get_by_role("img").scroll_into_view_if_needed()
            shot("page")
        finally:
            if shots:
                SHOTS.mkdir(parents=True, exist_ok=True)
                for path in shots:
                    shutil.copy(path, SHOTS / f"browser-{path.name}")
                shutil.copy(shots[-1], SHOTS / "browser-final.png")
            browser.close()
    assert [p.name for p in shots] == ["01-empty.png", "02-indexed.png", "03-answer.png", "04-page.png"]
