"""A real `kbqa serve` process records itself, a fresh `kbqa search`/`ask` process uses it, and the
record is gone when the server stops. Fake models (set through the environment): what is real is
the two processes, the record file and the HTTP between them (with a bearer token)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from processes import stop

from kbqa.warm import RECORD_FILE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kbqa(env: dict[str, str], home: Path, *args: str) -> str:
    run = subprocess.run([sys.executable, "-m", "kbqa.cli", *args], env=env, cwd=home, capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_serve_records_itself_and_the_cli_reuses_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "knowledge" / "kb").mkdir(parents=True)
    (home / "knowledge" / "kb" / "pumps.md").write_text(
        "# Pump P-17\n\nPrime pump P-17 with two litres of water, then open valve V3.\n", "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBQA_")}
    env.update(KBQA_HOME=str(home), KBQA_EMBEDDING__MODEL="fake", KBQA_LLM__BACKEND="fake",
               KBQA_API__TOKEN="secret-token", KBQA_MODELS_DIR=str(tmp_path / "models"), HF_HUB_OFFLINE="1")
    _kbqa(env, home, "index", "--kb", "kb", "--json")
    local = _kbqa(env, home, "search", "how do I prime pump P-17", "--kb", "kb", "--json", "--local")
    record = home / "vector_store" / RECORD_FILE
    port = _free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", f"import sys; from kbqa.serve import serve; "
                                 f"sys.exit(serve('127.0.0.1', {port}))"], env=env, cwd=home, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not record.is_file():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no server record:\n" + log.read_text()
            time.sleep(0.1)
        data = json.loads(record.read_text("utf-8"))
        assert data["pid"] == proc.pid and data["port"] == port and "secret-token" not in record.read_text("utf-8")
        warm = _kbqa(env, home, "search", "how do I prime pump P-17", "--kb", "kb", "--json")
        assert warm == local and json.loads(warm)["sources"][0]["file"] == "pumps.md"
        answer = json.loads(_kbqa(env, home, "ask", "how do I prime pump P-17", "--kb", "kb", "--json"))
        assert answer["sources"] and not answer["refused"]
        served = log.read_text()
        assert "POST /api/kbs/kb/search HTTP/1.1\" 200" in served and "POST /api/kbs/kb/ask HTTP/1.1\" 200" in served
    finally:
        stop(proc)
    assert proc.returncode == 0, log.read_text()
    assert not record.exists()
    assert _kbqa(env, home, "search", "how do I prime pump P-17", "--kb", "kb", "--json") == local


def test_search_help_names_the_flag() -> None:
    run = subprocess.run([sys.executable, "-m", "kbqa.cli", "search", "--help"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 0 and "--local" in run.stdout and "kbqa serve" in run.stdout
