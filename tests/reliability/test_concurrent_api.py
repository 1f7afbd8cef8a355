"""20 concurrent questions to a real uvicorn server on loopback while an indexing job runs.

The server runs in-process (so the embedding model can be a slowed-down fake: each indexing batch
takes a while, and the job lasts seconds); everything between the clients and the app is real
HTTP. Every question must be answered 200 — JSON or a complete SSE stream — never a 5xx, and
the job must end with every chunk in the index. The counts are printed at the end of the run.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from reliability_tools import fake_settings, index_problems, record, record_max

from kbqa.api import APISettings, create_app
from kbqa.kb import KnowledgeBase
from kbqa.testing import FakeChatModel, FakeEmbeddings
from kbqa.tokenize import Tokenizer

pytestmark = pytest.mark.reliability

QUESTIONS = 20
BATCH_SLEEP_S = 0.4
FILES = 40
PARAGRAPHS = 40
SEED = {"pumps.txt": "Pump P-17 must be primed before start-up. Open valve V3, then press the green button.",
        "fans.md": "# Fans\n\nFan blades are cleaned monthly with a dry cloth. Never use water on the motor."}
ASKS = ["How do I start pump P-17?", "When are fan blades cleaned?", "What must never be used on the motor?",
        "水泵启动前要做什么？", "Which valve do I open first?"]


class SlowEmbeddings(FakeEmbeddings):
    """The hashing model, but every indexing batch (more than one text) takes BATCH_SLEEP_S longer."""

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        if len(texts) > 1:
            time.sleep(BATCH_SLEEP_S)
        return super().encode(texts, batch_size)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    home = tmp_path / "home"
    settings = fake_settings(home)
    app = create_app(settings, APISettings(), embeddings=SlowEmbeddings(), llm=FakeChatModel(), tokenizer=Tokenizer())
    config = uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning", lifespan="on")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}", home
    finally:
        uv.should_exit = True
        thread.join(30)


def _wait(client: httpx.Client, job_id: str, until: tuple[str, ...], timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in until or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def _write_folder(folder: Path) -> None:
    """FILES files of PARAGRAPHS paragraphs: enough chunks for a job of several seconds with SlowEmbeddings."""
    for f in range(FILES):
        paragraphs = [f"Section {p} of manual {f}. Machine M-{f}-{p} is serviced every {p + 2} weeks by team "
                      f"{f % 5}; its filter code is F{f:02d}{p:03d} and its spare belt is B{p:03d}."
                      for p in range(PARAGRAPHS)]
        (folder / f"manual-{f:02d}.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")


def _ask(base: str, n: int) -> tuple[int, str, float, bool]:
    """One question (every fourth streamed); returns (status, problem or '', seconds, answered).

    Answered = a 200 with the answer JSON, or an SSE stream ending with its `answer` event.
    """
    question = ASKS[n % len(ASKS)]
    started = time.monotonic()
    with httpx.Client(base_url=base, timeout=60) as client:
        if n % 4 == 3:
            with client.stream("POST", "/api/kbs/kb/ask", json={"question": question, "stream": True}) as r:
                events = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
                ok = r.status_code == 200 and events[-1:] == ["answer"]
                problem = "" if ok else f"stream {r.status_code}: events {events[-3:]}"
                return r.status_code, problem, time.monotonic() - started, ok
        r = client.post("/api/kbs/kb/ask", json={"question": question})
        ok = r.status_code == 200 and "answer" in r.json() and isinstance(r.json()["sources"], list)
        return r.status_code, "" if ok else f"{r.status_code}: {r.text[:300]}", time.monotonic() - started, ok


@pytest.mark.parametrize("rebuild", [False, True], ids=["sync-job", "rebuild-job"])
def test_twenty_questions_while_indexing(server: tuple[str, Path], rebuild: bool) -> None:
    """While a job indexes the folder (incrementally, or rebuilding the index beside the old one)."""
    base, home = server
    with httpx.Client(base_url=base, timeout=60) as client:
        assert client.post("/api/kbs", json={"name": "kb"}).status_code == 201
        seed = [("files", (name, text.encode(), "text/plain")) for name, text in SEED.items()]
        first = client.post("/api/kbs/kb/files", files=seed).json()["job"]
        assert _wait(client, first["id"], ("done", "failed"))["status"] == "done"

        _write_folder(home / "knowledge" / "kb")
        job = client.post("/api/kbs/kb/reindex", json={"rebuild": rebuild}).json()
        running = _wait(client, job["id"], ("running", "done", "failed"))
        assert running["status"] == "running", running

        started = time.monotonic()
        with ThreadPoolExecutor(QUESTIONS) as pool:
            outcomes = list(pool.map(lambda n: _ask(base, n), range(QUESTIONS)))
        asked_for = time.monotonic() - started
        during = client.get(f"/api/jobs/{job['id']}").json()["status"] == "running"
        final = _wait(client, job["id"], ("done", "failed"))
        job_seconds = final["finished_at"] - final["started_at"]

    statuses = [status for status, *_ in outcomes]
    problems = [problem for _, problem, _, _ in outcomes if problem]
    answered = sum(1 for *_, ok in outcomes if ok)
    with KnowledgeBase.open("kb", fake_settings(home), embeddings=FakeEmbeddings()) as kb:
        corrupt = index_problems(kb)
        files = kb.store.files()
        lost = sum(1 for name in files if name.startswith("manual-") and files[name].n_chunks == 0)
        missing = FILES - sum(1 for name in files if name.startswith("manual-"))
    record("concurrent API", **{"index jobs": 1}, questions=QUESTIONS, answered=answered, **{
        "5xx": sum(1 for s in statuses if s >= 500), "other errors": sum(1 for s in statuses if s != 200 and s < 500),
        "asked while the job ran": QUESTIONS if during else 0, "job seconds": round(job_seconds),
        "corrupt indexes": len(corrupt), "files lost": missing + lost})
    record_max("concurrent API", **{"slowest answer ms": round(1000 * max(t for _, _, t, _ in outcomes))})

    assert not problems, "\n".join(problems)
    assert answered == QUESTIONS
    assert during, f"the job ended before the {QUESTIONS} questions were answered ({asked_for:.1f} s); make it longer"
    assert final["status"] == "done" and not [f for f in final["report"]["files"] if f["status"] == "failed"], (
        json.dumps(final)[:2000])
    assert not corrupt, corrupt
    assert missing == 0 and lost == 0
