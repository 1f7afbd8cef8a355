"""The one small interface every LLM backend implements, and its langchain-core face.

kbqa's answer chain needs four things from a model: stream a reply to chat messages,
count tokens with the model's own tokenizer (to cut the context to its window), know
that window, and know which languages it answers well. `ChatBackend` is exactly that;
`as_langchain()` wraps any backend as a langchain-core `BaseChatModel` for users who
compose their own chains.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TypedDict, runtime_checkable

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


@runtime_checkable
class ChatBackend(Protocol):
    """A chat model kbqa can answer with."""

    name: str
    """Shown to users as the model that answered, e.g. 'bundled:SmolLM2-135M-Instruct-Q4_1'."""
    languages: frozenset[str] | None
    """Languages ('en', 'zh', …) it answers well; None = any."""

    @property
    def context_window(self) -> int:
        """Tokens the model sees at once: prompt plus answer."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in this model's own tokenizer."""
        ...

    def stream(self, messages: Sequence[Message], *, max_tokens: int, temperature: float,
               stop: Sequence[str] = ()) -> Iterator[str]:
        """Yield the reply's text pieces as they are generated. Raises `LLMError` on failure."""
        ...


def complete(backend: ChatBackend, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0,
             stop: Sequence[str] = ()) -> str:
    """The whole reply at once."""
    return "".join(backend.stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop))


_ROLES = {"human": "user", "ai": "assistant", "system": "system", "user": "user", "assistant": "assistant"}


def _to_messages(messages: list[BaseMessage]) -> list[Message]:
    return [Message(role=_ROLES.get(m.type, "user"), content=str(m.content)) for m in messages]


class LangchainChatModel(BaseChatModel):
    """A `ChatBackend` as a langchain-core `BaseChatModel` (invoke, stream, batch, LCEL)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: Any
    max_tokens: int = 384
    temperature: float = 0.1

    @property
    def _llm_type(self) -> str:
        return "kbqa"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.backend.name}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        text = "".join(c.message.content for c in self._stream(messages, stop, run_manager, **kwargs))  # type: ignore[misc]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        pieces = self.backend.stream(_to_messages(messages), max_tokens=kwargs.get("max_tokens", self.max_tokens),
                                     temperature=kwargs.get("temperature", self.temperature), stop=stop or ())
        for piece in pieces:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk


def as_langchain(backend: ChatBackend, *, max_tokens: int = 384, temperature: float = 0.1) -> LangchainChatModel:
    return LangchainChatModel(backend=backend, max_tokens=max_tokens, temperature=temperature)
