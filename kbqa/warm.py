"""Reusing a running `kbqa serve` from the CLI, so `kbqa search`/`ask` skip loading anything.

`kbqa serve` records where it listens in ``<home>/vector_store/.kbqa-server.json`` (its pid,
address and a digest of its settings) once its socket is bound, and removes the record when it
stops. `kbqa search` and `kbqa ask` read that record first; when it names a live process whose
settings digest equals their own (same home, models, retrieval and answer settings: the same
answers), they send the question there with a short connect timeout, and otherwise — no record,
a dead pid, another configuration, a refused connection, any HTTP error — they answer in their
own process as before, silently. Output is the same either way (the server runs the same
library code on the same index; tests/unit/test_warm.py checks both paths).

Only the standard library is imported here (http.client, json), so a served answer costs a
fresh process the interpreter, typer and the settings — no numpy, FAISS, torch or LangChain.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kbqa.config import Settings
from kbqa.errors import KbqaError
from kbqa.schema import Answer, Retrieved, Source

RECORD_FILE = ".kbqa-server.json"
CONNECT_TIMEOUT_S = 0.3
"""How long the CLI waits for the server's socket before answering in its own process."""
SEARCH_TIMEOUT_S = 120.0
_MAX_TEXT = 8000  # the API's limit on a query or question (kbqa.api.models.MAX_QUESTION)


def settings_digest(settings: Settings) -> str:
    """What must match for a server to answer exactly as this process would: every setting
    except the `ui` and `api` sections, with the home folder made absolute."""
    data = settings.model_dump(mode="json", exclude={"ui", "api"})
    data["home"] = str(Path(settings.home).expanduser().resolve())
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:32]


def record_path(settings: Settings) -> Path:
    return settings.vector_store_dir / RECORD_FILE


def write_record(settings: Settings, host: str, port: int) -> Path:
    """Record this process as the server for `settings.home` (atomically: readers never see half)."""
    path = record_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"pid": os.getpid(), "host": host, "port": port, "settings": settings_digest(settings)}
    tmp = path.with_name(f"{RECORD_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)
    return path


def remove_record(settings: Settings) -> None:
    """Remove the record if it is this process's (another server may have taken the home since)."""
    path = record_path(settings)
    with suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: not a server this user started
        return False
    except OSError:
        return False
    return True


def _sendable(text: str) -> bool:
    """Text the API takes unchanged (it replaces lone surrogates and drops NUL; it caps the length)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return 0 < len(text) <= _MAX_TEXT and "\x00" not in text


@dataclass(frozen=True)
class WarmServer:
    """A running `kbqa serve` with this process's settings."""

    host: str
    port: int
    token: str = ""

    @classmethod
    def find(cls, settings: Settings) -> WarmServer | None:
        try:
            data = json.loads(record_path(settings).read_text(encoding="utf-8"))
            pid, host, port, digest = int(data["pid"]), str(data["host"]), int(data["port"]), data["settings"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if digest != settings_digest(settings) or not _alive(pid) or not 0 < port < 65536:
            return None
        connect = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
        return cls(connect, port, settings.api.token)

    def _request(self, method: str, path: str, body: dict[str, Any] | None, timeout: float, stream: bool = False
                 ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse] | None:
        """Send a request (JSON `body`); the open connection and response when it answered 200, else None."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=CONNECT_TIMEOUT_S)
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        payload = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        try:
            conn.connect()
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            conn.request(method, path, payload, headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException):
            conn.close()
            return None
        if response.status != 200:
            conn.close()
            return None
        return conn, response

    def count(self, kb: str) -> int:
        """How many chunks the server's knowledge base `kb` holds (0 when it cannot say)."""
        answered = self._request("GET", f"/api/kbs/{quote(kb, safe='')}", None, SEARCH_TIMEOUT_S)
        if answered is None:
            return 0
        conn, response = answered
        try:
            data = json.loads(response.read())
        except (OSError, http.client.HTTPException, ValueError):
            return 0
        finally:
            conn.close()
        return int(data.get("chunks", 0)) if isinstance(data, dict) else 0

    def _post_json(self, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        answered = self._request("POST", path, body, timeout)
        if answered is None:
            return None
        conn, response = answered
        try:
            data = json.loads(response.read())
        except (OSError, http.client.HTTPException, ValueError):
            return None
        finally:
            conn.close()
        return data if isinstance(data, dict) else None

    def search(self, kb: str, query: str, k: int | None, min_score: float | None) -> dict[str, Any] | None:
        """`{"sources": [...]}` as `kbqa search --json` prints it, or None (answer in-process)."""
        if not _sendable(query):
            return None
        data = self._post_json(f"/api/kbs/{quote(kb, safe='')}/search",
                               {"query": query, "k": k, "min_score": min_score}, SEARCH_TIMEOUT_S)
        return data if data is not None and isinstance(data.get("sources"), list) else None

    def ask(self, kb: str, question: str, k: int | None, min_score: float | None, explain: bool,
            timeout: float) -> dict[str, Any] | None:
        """The `kbqa ask --json` object, or None (answer in-process)."""
        if not _sendable(question):
            return None
        data = self._post_json(f"/api/kbs/{quote(kb, safe='')}/ask", {"question": question, "k": k,
                               "min_score": min_score, "explain": explain}, timeout)
        return data if data is not None and "answer" in data else None

    def ask_stream(self, kb: str, question: str, k: int | None, min_score: float | None,
                   timeout: float) -> Iterator[str | Retrieved | Answer] | None:
        """What `KnowledgeBase.ask_stream` yields, read from the server's event stream; None if it
        cannot start (answer in-process). Once started, a failure is a `KbqaError`."""
        if not _sendable(question):
            return None
        body = {"question": question, "k": k, "min_score": min_score, "explain": True, "stream": True}
        answered = self._request("POST", f"/api/kbs/{quote(kb, safe='')}/ask", body, timeout, stream=True)
        if answered is None:
            return None
        return _events(*answered, question)


def _events(conn: http.client.HTTPConnection, response: http.client.HTTPResponse,
            question: str) -> Iterator[str | Retrieved | Answer]:
    where = f"the kbqa server at {conn.host}:{conn.port}"
    try:
        event = ""
        while True:
            try:
                line = response.readline()
            except (OSError, http.client.HTTPException) as exc:
                raise KbqaError(f"{where} stopped answering: {exc}") from exc
            if not line:
                raise KbqaError(f"{where} closed the answer stream before the answer")
            text = line.decode("utf-8").rstrip("\r\n")
            if text.startswith("event:"):
                event = text[6:].strip()
            elif text.startswith("data:"):
                try:
                    data = json.loads(text[5:])
                except ValueError as exc:
                    raise KbqaError(f"{where} sent a malformed event: {text[:80]!r}") from exc
                if event == "token":
                    yield str(data["text"])
                elif event == "sources":
                    yield Retrieved([source_from_json(s) for s in data["sources"]])
                elif event == "answer":
                    yield answer_from_json(data, question)
                    return
                elif event == "error":
                    raise KbqaError(str(data.get("error", "the server failed to answer")))
    finally:
        conn.close()


def source_from_json(d: dict[str, Any]) -> Source:
    return Source(int(d["n"]), d["file"], d["path"], d.get("page"), d.get("heading") or "", float(d["score"]),
                  d.get("text") or "")


def answer_from_json(d: dict[str, Any], question: str) -> Answer:
    """An `Answer` from `Answer.to_json(extended=True)`."""
    return Answer(text=d["answer"], refused=bool(d["refused"]), sources=[source_from_json(s) for s in d["sources"]],
                  timings_ms=dict(d.get("timings_ms") or {}), mode=d.get("mode", "generative"),
                  model=d.get("model", ""), question=question, standalone_question=d.get("standalone_question", ""),
                  language=d.get("language", "en"), cited=list(d.get("cited") or []), note=d.get("note", ""),
                  tokens=int(d.get("tokens", 0)))
