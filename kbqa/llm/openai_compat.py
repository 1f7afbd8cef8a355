"""The `openai` backend: any OpenAI-compatible chat server (vLLM, FastChat, Ollama, llama.cpp server, Zhipu).

The model runs elsewhere; this side only streams `/chat/completions`. With `llm.model` empty the
first model the server lists at `/models` is used (what single-model servers expect).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from kbqa.config import LLMSettings
from kbqa.errors import DependencyMissingError, LLMError
from kbqa.llm.base import Message, StopFilter

DEFAULT_CONTEXT = 4096
"""The window when llm.context_window is 0: the OpenAI API has no standard way to ask a server for it."""
MAX_MESSAGE = 500  # servers may answer an error with a whole traceback
MAX_STOPS = 4  # the OpenAI API accepts at most four stop strings; any further ones are cut client-side
_CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef\u3040-\u30ff\uac00-\ud7af]")


def estimate_tokens(text: str) -> int:
    """A rough token count without the server's tokenizer (the API exposes none).

    Each CJK character counts as one token (most Chinese-capable tokenizers use 0.6–1.5 per
    character); other text counts one token per ~4 characters, as for English BPE vocabularies.
    """
    cjk = len(_CJK.findall(text))
    return cjk + math.ceil((len(text) - cjk) / 4)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Errors a stream can raise mid-body without the openai package wrapping them."""
    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx", "httpx2"):  # openai<3 uses httpx, openai>=3 its fork httpx2
        with contextlib.suppress(ImportError, AttributeError):
            errors.append(__import__(module).HTTPError)
    return tuple(errors)


class OpenAIChatModel:
    """An OpenAI-compatible server as a `ChatBackend`; nothing is contacted until the first `stream`."""

    def __init__(self, settings: LLMSettings) -> None:
        if not settings.base_url:
            raise LLMError("llm.base_url must be set for the 'openai' backend (e.g. http://127.0.0.1:8000/v1)")
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self.languages: frozenset[str] | None = frozenset(settings.languages) or None
        self.name = f"openai:{settings.model}" if settings.model else f"openai:{self.base_url}"
        self._model_id = settings.model or None
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def context_window(self) -> int:
        return self.settings.context_window or DEFAULT_CONTEXT

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                from openai import OpenAI
            except ImportError as exc:
                raise DependencyMissingError("openai", "The 'openai' LLM backend") from exc
            key = self.settings.api_key or os.environ.get("OPENAI_API_KEY") or "none"
            self._client = OpenAI(base_url=self.base_url, api_key=key, timeout=self.settings.timeout_s, max_retries=1)
        return self._client

    @property
    def model_id(self) -> str:
        """llm.model, or else the first model the server lists."""
        if self._model_id is None:
            with self._lock:
                if self._model_id is None:
                    models = self._call(lambda: [m.id for m in self.client.models.list()], "listing models")
                    if not models:
                        raise LLMError(f"the LLM server at {self.base_url} lists no models; set llm.model")
                    self._model_id = str(models[0])
                    self.name = f"openai:{self._model_id}"
        return self._model_id

    def stream(self, messages: Sequence[Message], *, max_tokens: int, temperature: float,
               stop: Sequence[str] = ()) -> Iterator[str]:
        request: dict[str, Any] = {
            "model": self.model_id,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
        }
        stops = StopFilter(stop)  # also client-side: some servers ignore `stop`, and it takes only four
        if stops.stops:
            request["stop"] = stops.stops[:MAX_STOPS]
        response = self._call(lambda: self.client.chat.completions.create(**request), "starting the reply")
        def texts() -> Iterator[str]:
            chunks = iter(response)
            while True:
                chunk = self._call(lambda: next(chunks, None), "streaming the reply")
                if chunk is None:
                    return
                for choice in chunk.choices or ():
                    text = getattr(choice.delta, "content", None) if choice.index == 0 else None
                    if text:
                        yield text

        try:
            yield from stops.apply(texts())
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()

    def _call(self, fn: Any, doing: str) -> Any:
        """Run one request, turning the openai package's and the transport's errors into LLMError."""
        import openai

        try:
            return fn()
        except openai.APIStatusError as exc:
            message = getattr(exc, "message", "") or str(exc)
            if len(message) > MAX_MESSAGE:
                message = message[:MAX_MESSAGE] + " …"
            raise LLMError(f"the LLM server at {self.base_url} answered HTTP {exc.status_code} "
                           f"while {doing}: {message}") from exc
        except openai.APITimeoutError as exc:
            raise LLMError(f"the LLM server at {self.base_url} did not answer within {self.settings.timeout_s:g} s "
                           f"while {doing} (raise llm.timeout_s?)") from exc
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise LLMError(f"cannot reach the LLM server at {self.base_url} while {doing}: {cause}") from exc
        except openai.OpenAIError as exc:
            raise LLMError(f"the LLM server at {self.base_url} failed while {doing}: {exc}") from exc
        except _transport_errors() as exc:
            raise LLMError(f"the connection to the LLM server at {self.base_url} broke while {doing}: "
                           f"{type(exc).__name__}: {exc}") from exc
