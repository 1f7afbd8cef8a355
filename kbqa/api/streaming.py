"""Running a blocking generator (an answer stream) on its own thread and reading it from asyncio.

Every item of one answer is produced on the same thread: local LLM backends hold a lock while
they generate, and a lock must be released by the thread that took it. When the client goes
away the consumer stops, and the producer closes the generator at its next item (which stops
the model).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from kbqa.errors import KbqaError

T = TypeVar("T")

_ITEM, _ERROR, _END = "item", "error", "end"


async def stream_from_thread(produce: Callable[[], Iterator[T]]) -> AsyncGenerator[T, None]:
    """Yield what `produce()` yields, computed on a fresh daemon thread; its exceptions re-raise here."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()

    def put(kind: str, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone (server shutting down): nobody is listening
            stop.set()

    def run() -> None:
        try:
            gen = produce()
            try:
                for item in gen:
                    if stop.is_set():
                        break
                    put(_ITEM, item)
            finally:
                close = getattr(gen, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_ERROR, exc)
        else:
            put(_END, None)

    threading.Thread(target=run, name="kbqa-answer-stream", daemon=True).start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == _ITEM:
                yield value
            elif kind == _ERROR:
                raise value
            else:
                return
    finally:
        stop.set()


async def first_item(items: AsyncIterator[T]) -> T:
    """The first item (raising what producing it raised), so a failure before it is a plain HTTP error."""
    try:
        return await anext(items)
    except StopAsyncIteration:
        raise KbqaError("the answer chain ended without an answer") from None


def sse_event(event: str, data: Any) -> str:
    """One Server-Sent Event; `data` as one line of JSON (so newlines in text are safe)."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def sse_data(data: Any) -> str:
    """An unnamed event, as OpenAI streams: `data: {json}`, or `data: [DONE]` for the string '[DONE]'."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n"


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
