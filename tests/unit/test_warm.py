"""`kbqa search`/`ask` through a running `kbqa serve` (kbqa/warm.py) and in their own process: same output.

The server runs on a thread of the test process (uvicorn on an ephemeral loopback port, the real
FastAPI app with the fake models named by the settings); the CLI runs through typer's runner.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kbqa import cli
from kbqa.api import create_app
from kbqa.config import Settings, load_settings
from kbqa.kb import KnowledgeBase
from kbqa.warm import WarmServer, record_path, remove_record, settings_digest, write_record

runner = CliRunner()

DOCS = {
    "pump.md": "# Pump P-17\n\nPrime pump P-17 with two litres of water before the first start.\n\n"
               "# Valve V3\n\nValve V3 opens clockwise; close it before maintenance.\n",
    "zh.md": "# 除垢\n\n除垢大约需要二十五分钟，请先关闭电源。\n",
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KBQA_EMBEDDING__MODEL", "fake")
    monkeypatch.setenv("KBQA_LLM__BACKEND", "fake")
    monkeypatch.setenv("KBQA_MODELS_DIR", str(tmp_path / "models"))
    h = tmp_path / "home"
    (h / "knowledge" / "m").mkdir(parents=True)
    for name, text in DOCS.items():
        (h / "knowledge" / "m" / name).write_text(text, "utf-8")
    with KnowledgeBase.create("m", load_settings(home=h), exist_ok=True) as kb:
        assert kb.sync().ok
    return h


@contextmanager
def serving(settings: Settings) -> Iterator[int]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(settings, settings.api), host="127.0.0.1", port=0,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.02)
    port = int(server.servers[0].sockets[0].getsockname()[1])
    write_record(settings, "127.0.0.1", port)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records which CLI calls the server answered (a method name per answered call)."""
    calls: list[str] = []
    for name in ("search", "ask", "ask_stream"):
        real = getattr(WarmServer, name)

        def spy(self: WarmServer, *a: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            result = _real(self, *a, **kw)
            if result is not None:
                calls.append(_name)
            return result

        monkeypatch.setattr(WarmServer, name, spy)
    return calls


def _cli(home: Path, *args: str) -> str:
    res = runner.invoke(cli.app, [*args, "--kb", "m", "--home", str(home)])
    assert res.exit_code == 0, res.output
    return res.stdout


def _no_timings(out: str) -> dict[str, Any]:
    data = json.loads(out)
    data.pop("timings_ms")
    return data


def test_search_and_ask_give_the_same_output_served_and_local(home: Path, served: list[str]) -> None:
    with serving(load_settings(home=home)):
        for query in ("which way does valve V3 open", "除垢需要多长时间？"):
            warm = _cli(home, "search", query, "--json")
            assert warm == _cli(home, "search", query, "--json", "--local")
            assert json.loads(warm)["sources"]
            assert _cli(home, "search", query) == _cli(home, "search", query, "--local")  # the human form too
        question = "How much water primes pump P-17?"
        warm = _cli(home, "ask", question, "--json", "--explain")
        assert _no_timings(warm) == _no_timings(_cli(home, "ask", question, "--json", "--explain", "--local"))
        assert json.loads(warm)["sources"] and not json.loads(warm)["refused"]
        assert _cli(home, "ask", question) == _cli(home, "ask", question, "--local")  # streamed, then sources
    assert served == ["search", "search", "search", "search", "ask", "ask_stream"]


def test_the_server_sees_what_another_process_indexed(home: Path, served: list[str]) -> None:
    settings = load_settings(home=home)
    with serving(settings):
        before = json.loads(_cli(home, "search", "grease the bearing every 200 hours", "--json"))
        assert "bearing.md" not in {s["file"] for s in before["sources"]}
        with KnowledgeBase.open("m", settings) as kb:  # as `kbqa index` in another terminal would
            (kb.knowledge_dir / "bearing.md").write_text("Grease the main bearing every 200 hours.\n", "utf-8")
            assert kb.sync().ok
        warm = _cli(home, "search", "grease the bearing every 200 hours", "--json")
        assert warm == _cli(home, "search", "grease the bearing every 200 hours", "--json", "--local")
        assert json.loads(warm)["sources"][0]["file"] == "bearing.md"
        with KnowledgeBase.open("m", settings) as kb:  # a rebuild swaps the index folder
            kb.rebuild()
        assert _cli(home, "search", "valve V3", "--json") == _cli(home, "search", "valve V3", "--json", "--local")
    assert served == ["search", "search", "search"]


def test_falls_back_silently_when_the_server_is_gone_or_different(home: Path, served: list[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(home=home)
    local = _cli(home, "search", "valve V3", "--json", "--local")
    with serving(settings):
        pass  # stopped again, its record left behind (as after kill -9)
    assert record_path(settings).is_file()
    assert _cli(home, "search", "valve V3", "--json") == local  # connection refused: answered here
    write_record(settings, "127.0.0.1", 9)  # a live pid (ours) on a port nobody serves
    assert _cli(home, "search", "valve V3", "--json") == local
    with serving(settings):
        monkeypatch.setenv("KBQA_RETRIEVAL__K", "2")  # other settings than the server's: not used
        assert WarmServer.find(load_settings(home=home)) is None
        assert len(json.loads(_cli(home, "search", "valve V3", "--json"))["sources"]) <= 2
    assert served == []


def test_record_belongs_to_a_live_process_with_the_same_settings(home: Path) -> None:
    settings = load_settings(home=home)
    path = write_record(settings, "0.0.0.0", 8123)
    data = json.loads(path.read_text("utf-8"))
    assert data == {"pid": os.getpid(), "host": "0.0.0.0", "port": 8123, "settings": settings_digest(settings)}
    found = WarmServer.find(settings)
    assert found is not None and (found.host, found.port) == ("127.0.0.1", 8123)
    assert settings_digest(load_settings(home=home)) == settings_digest(settings)
    assert settings_digest(load_settings(home=home, ui={"port": 9999}, api={"port": 1})) == settings_digest(settings)
    assert settings_digest(load_settings(home=home, retrieval={"k": 9})) != settings_digest(settings)
    data["pid"] = 2 ** 22 + 12345  # beyond pid_max: no such process
    path.write_text(json.dumps(data), "utf-8")
    assert WarmServer.find(settings) is None
    remove_record(settings)
    assert path.is_file()  # not this process's record: left alone
    write_record(settings, "127.0.0.1", 8123)
    remove_record(settings)
    assert not path.exists()
    path.write_text("{not json", "utf-8")
    assert WarmServer.find(settings) is None
    assert KnowledgeBase.list_names(settings) == ["m"]  # the record is not taken for a knowledge base
