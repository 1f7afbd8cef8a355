"""The one small interface every LLM backend implements, and its langchain-core face.

kbqa's answer chain needs four things from a model: stream a reply to chat messages,
count tokens with the model's own tokenizer (to cut the context to its window), know
that window, and know which languages it answers well. `ChatBackend` is exactly that;
`as_langchain()` wraps any backend as a langchain-core `BaseChatModel` for users who
compose their own chains.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
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


class StopFilter:
    """Cuts a stream of text pieces at the first stop string, also one split across pieces.

    Only the tail that could still be the start of a stop string is held back, so text flows
    as it comes. `stopped` turns true once a stop string was seen; everything after it is dropped.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.stopped = False
        self._buf = ""

    def push(self, piece: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return piece
        self._buf += piece
        hits = [i for i in (self._buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self._buf = self._buf[: min(hits)], ""
            return out
        keep = self._partial_len()
        out = self._buf[: len(self._buf) - keep]
        self._buf = self._buf[len(self._buf) - keep:]
        return out

    def apply(self, pieces: Iterable[str]) -> Iterator[str]:
        """The pieces, cut at the first stop string; stops reading `pieces` there."""
        for piece in pieces:
            out = self.push(piece)
            if out:
                yield out
            if self.stopped:
                return
        tail = self.flush()
        if tail:
            yield tail

    def flush(self) -> str:
        out, self._buf = ("" if self.stopped else self._buf), ""
        return out

    def _partial_len(self) -> int:
        """Length of the longest tail of the buffer that is a proper prefix of a stop string."""
        best = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self._buf)), best, -1):
                if self._buf.endswith(stop[:k]):
                    best = k
                    break
        return best


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
