"""`kbqa serve` as a real uvicorn process on loopback, driven over HTTP by httpx and the `openai` client.

Fake embeddings and LLM (set through the environment), so it runs in seconds; what is real is
the server process, the HTTP/SSE wire format, bearer auth, and the OpenAI client's parsing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from processes import stop

TOKEN = "integration-token"
QUESTION = "How do I start pump P-17?"
DOCS = {
    "pumps.txt": "Pump P-17 must be primed before start-up. Open valve V3, then press the green button.",
    "fans.md": "# Fans\n\nFan blades are cleaned monthly with a dry cloth. Never use water on the motor.",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("api-home")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBQA_")}
    env.update(KBQA_HOME=str(home), KBQA_EMBEDDING__MODEL="fake", KBQA_LLM__BACKEND="fake",
               KBQA_API__TOKEN=TOKEN, HF_HUB_OFFLINE="1")
    log = home / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", f"import sys; from kbqa.serve import serve; sys.exit(serve('127.0.0.1', {port}))"],
            env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "server did not start:\n" + log.read_text()
            time.sleep(0.1)
        _index(base)
        yield base
    finally:
        stop(proc)
    assert proc.returncode == 0, log.read_text()


def _index(base: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(f"{base}/api/kbs", json={"name": "kb"}, headers=auth).status_code == 201
    files = [("files", (name, text.encode(), "text/plain")) for name, text in DOCS.items()]
    job = httpx.post(f"{base}/api/kbs/kb/files", files=files, headers=auth).json()["job"]
    deadline = time.monotonic() + 60
    while job["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
        job = httpx.get(f"{base}/api/jobs/{job['id']}", headers=auth).json()
    assert job["status"] == "done", job


@pytest.fixture
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=TOKEN, max_retries=0, timeout=30)


def test_openai_client_lists_knowledge_bases_as_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["kb"]
    assert client.models.retrieve("kb").owned_by == "kbqa"


def test_openai_client_chats_with_a_knowledge_base_and_gets_sources(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="kb", messages=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": QUESTION}])
    assert completion.choices[0].message.content == "Pump P-17 must be primed before start-up [1]."
    assert completion.choices[0].finish_reason == "stop"
    extra = completion.model_extra or {}
    assert extra["sources"][0]["file"] == "pumps.txt" and extra["sources"][0]["n"] == 1
    assert extra["kbqa"]["refused"] is False and extra["kbqa"]["cited"] == [1]


def test_openai_client_streams_and_gets_sources_on_the_last_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="kb", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": QUESTION}])
    pieces, sources, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            if choice.finish_reason == "stop":
                sources = (chunk.model_extra or {})["sources"]
    assert len([p for p in pieces if p]) > 1  # streamed in pieces, not one block
    assert "".join(pieces).strip() == "Pump P-17 must be primed before start-up [1]."
    assert sources is not None and sources[0]["file"] == "pumps.txt"
    assert usage is not None and usage.completion_tokens >= 1


def test_openai_client_multi_turn_and_refusal(client: openai.OpenAI) -> None:
    history = [{"role": "user", "content": QUESTION},
               {"role": "assistant", "content": "Pump P-17 must be primed before start-up [1]."},
               {"role": "user", "content": "What is the capital of Mongolia?"}]
    completion = client.chat.completions.create(model="kb", messages=history)  # type: ignore[arg-type]
    assert (completion.model_extra or {})["kbqa"]["refused"] is True


def test_openai_client_errors(server: str) -> None:
    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    good = openai.OpenAI(base_url=f"{server}/v1", api_key=TOKEN, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="no knowledge base 'gpt-4o'"):
        good.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


def test_ask_streams_server_sent_events_over_http(server: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    events: list[tuple[str, dict[str, object]]] = []
    with httpx.stream("POST", f"{server}/api/kbs/kb/ask", json={"question": QUESTION, "stream": True},
                      headers=auth, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    names = [n for n, _ in events]
    assert names[0] == "sources" and names[-1] == "answer" and set(names[1:-1]) == {"token"}
    assert events[0][1]["sources"][0]["file"] == "pumps.txt"  # what it reads, before the first token
    assert events[-1][1]["answer"] == "Pump P-17 must be primed before start-up [1]."
    assert httpx.post(f"{server}/api/kbs/kb/ask", json={"question": QUESTION}).status_code == 401


def test_exposed_host_without_token_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBQA_")}
    env.update(KBQA_HOME=str(tmp_path), KBQA_EMBEDDING__MODEL="fake", KBQA_LLM__BACKEND="fake")
    code = "import sys; from kbqa.serve import serve; sys.exit(serve('0.0.0.0', 8999))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "without a token" in done.stderr
