"""Keep the fixed system prompt's KV state between questions, also across processes.

On a CPU the prompt is most of the wait (a 1.5B model reads ~20-40 tokens/s on two cores),
and every question starts with the same system prompt. Within one process llama-cpp-python
already reuses the longest common token prefix of consecutive prompts; this adds the cold
case (`kbqa ask` starts a new process each time): the state right after the system prefix
is saved once to the model cache and loaded by the next process instead of re-reading it.

Only the prefix tokens and llama.cpp's own state blob are stored (numpy `.npz`, no pickle);
the key covers the model file, the context size, the llama.cpp version and the tokens.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from kbqa.models import models_dir

log = logging.getLogger(__name__)


class PrefixCache:
    """Primes a `llama_cpp.Llama` with the KV state of a chat's system prefix."""

    def __init__(self, llm: Any, model_path: Path, folder: Path | None = None) -> None:
        self.llm = llm
        self.model_path = model_path
        self.folder = folder or models_dir() / "prefix-states"
        self._formatter: Any = None
        self._known: dict[str, list[int]] = {}  # system text -> its prefix tokens

    def prime(self, messages: list[dict[str, str]]) -> int:
        """Make the model's KV cache start with the messages' system prefix; the tokens it holds."""
        if not messages or messages[0].get("role") != "system":
            return 0
        try:
            prefix = self._prefix_tokens(messages[0]["content"])
        except Exception as exc:  # a GGUF without a usable chat template: nothing to prime
            log.debug("prefix cache off for %s: %s", self.model_path, exc)
            return 0
        if len(prefix) < 8:
            return 0
        llm = self.llm
        if llm.n_tokens >= len(prefix) and list(llm.input_ids[: len(prefix)]) == prefix:
            return len(prefix)  # already there (an earlier question in this process)
        path = self.folder / f"{self._key(prefix)}.npz"
        if self._load(path, prefix):
            return len(prefix)
        llm.reset()
        llm.eval(prefix)
        self._save(path, prefix)
        return len(prefix)

    # -- the prefix ------------------------------------------------------------------------
    def _prefix_tokens(self, system: str) -> list[int]:
        if system not in self._known:
            a = self._tokens([{"role": "system", "content": system}, {"role": "user", "content": "A"}])
            b = self._tokens([{"role": "system", "content": system}, {"role": "user", "content": "Z"}])
            n = 0
            while n < min(len(a), len(b)) and a[n] == b[n]:
                n += 1
            self._known[system] = a[:n]
        return self._known[system]

    def _tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt tokens exactly as llama-cpp-python's GGUF-template chat handler makes them."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llm = self.llm
        if self._formatter is None:
            template = llm.metadata["tokenizer.chat_template"]

            def text(token: int) -> str:
                return llm.detokenize([token], special=True).decode("utf-8", "ignore") if token != -1 else ""

            self._formatter = Jinja2ChatFormatter(template=template, eos_token=text(llm.token_eos()),
                                                  bos_token=text(llm.token_bos()))
        result = self._formatter(messages=messages)
        return list(llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True))

    def _key(self, prefix: list[int]) -> str:
        import llama_cpp

        st = self.model_path.stat()
        digest = hashlib.sha256(f"{self.model_path.resolve()}:{st.st_size}:{st.st_mtime_ns}:"
                                f"{self.llm.n_ctx()}:{llama_cpp.__version__}".encode())
        digest.update(np.asarray(prefix, dtype=np.int32).tobytes())
        return digest.hexdigest()[:32]

    # -- disk ----------------------------------------------------------------------------
    def _load(self, path: Path, prefix: list[int]) -> bool:
        from llama_cpp.llama import LlamaState

        try:
            with np.load(path, allow_pickle=False) as data:
                tokens, blob = data["tokens"], data["state"]
            if list(tokens) != prefix:
                return False
            llm = self.llm
            ids = np.zeros(llm.n_ctx(), dtype=np.intc)
            ids[: len(prefix)] = prefix
            state = LlamaState(input_ids=ids, scores=np.zeros((1, llm.n_vocab()), dtype=np.single),
                               n_tokens=len(prefix), llama_state=blob.tobytes(), llama_state_size=int(blob.size),
                               seed=0)
            llm.load_state(state)
            return True
        except FileNotFoundError:
            return False
        except Exception as exc:  # damaged or from another build: read the prefix again
            log.debug("ignoring prefix state %s: %s", path, exc)
            self.llm.reset()
            return False

    def _save(self, path: Path, prefix: list[int]) -> None:
        with contextlib.suppress(OSError, RuntimeError):  # a read-only cache only costs the prefix next time
            state = self.llm.save_state()
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, tokens=np.asarray(prefix, dtype=np.int32),
                     state=np.frombuffer(state.llama_state, dtype=np.uint8))
            os.replace(tmp, path)
