"""OpenAI-compatible endpoints: any OpenAI client can list the knowledge bases and chat with one.

* `GET /v1/models` lists the knowledge bases as models; `GET /v1/models/{id}` one of them.
* `POST /v1/chat/completions`: `model` names the knowledge base; the last message (the user's)
  is the question and the earlier user/assistant turns are the history (system messages are
  ignored: kbqa writes its own prompt). `temperature`, `max_tokens` and other sampling fields
  are accepted and ignored (the server's `llm:` settings apply); `k` and `min_score` are kbqa
  extensions (pass them with the client's `extra_body`).

Sources: the response carries a top-level `sources` list (the stable source shape of
`kbqa search --json`, numbered as the answer's `[n]` markers) and a top-level `kbqa` object
(refused, mode, model, cited, note, timings_ms, ...). When streaming, both ride on the last
chunk, the one whose `finish_reason` is "stop". The openai Python client keeps unknown fields:
`completion.sources` / `chunk.sources` (or `.model_extra["sources"]`).

Streaming sends the model's text as it is generated, except where the answer chain rewrites a
small model's answer (`answer.small_model_guard`, on for the bundled model): there the streamed
text would be replaced, so the final answer is sent as one piece when it is ready. Otherwise, if
the final answer differs from what was streamed (citations added, or a fallback to quoting the
sources), the rest is sent when it only extends the streamed text, else the final answer follows
under a separator line, as `kbqa ask` prints it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from kbqa.errors import KbqaError
from kbqa.kb import KnowledgeBase
from kbqa.schema import Answer, Retrieved

from .errors import NotFoundError
from .models import ChatCompletionIn, ChatCompletionOut, ChatMessage, ModelList, ModelOut
from .state import ServerState
from .streaming import SSE_HEADERS, first_item, sse_data, stream_from_thread

_OAI_ERROR = {"description": "OpenAI error shape: {\"error\": {\"message\", \"type\", \"param\", \"code\"}}"}


def message_text(message: ChatMessage) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p.text for p in content if p.text)


def question_and_history(messages: list[ChatMessage]) -> tuple[str, list[dict[str, str]]]:
    last = messages[-1]
    question = message_text(last).strip()
    if last.role != "user" or not question:
        raise KbqaError("the last message must be the user's question (role 'user', non-empty content)")
    history = [{"role": m.role, "content": text} for m in messages[:-1]
               if m.role in ("user", "assistant") and (text := message_text(m).strip())]
    return question, history


def extras(answer: Answer) -> dict[str, Any]:
    """The kbqa fields that ride along with an OpenAI response: `sources` and `kbqa`."""
    data = answer.to_json(extended=True)
    sources = data.pop("sources")
    data.pop("answer")
    return {"sources": sources, "kbqa": data}


def rewrites_answers(kb: KnowledgeBase) -> bool:
    """Whether the answer chain rewrites the model's text (the small-model guard), so live text would be replaced."""
    chain = kb.answer_chain()
    guarded = getattr(chain, "guarded", None)
    return bool(guarded()) if callable(guarded) else False


def tail_after(streamed: str, final: Answer) -> str:
    """What to send after the streamed text so that the client ends with the final answer."""
    text = final.text
    if text.startswith(streamed):
        return text[len(streamed):]
    if not streamed.strip():
        return text
    if text.strip() == streamed.strip():
        return ""
    label = "with citations" if final.mode == "generative" else f"{final.mode} answer"
    return f"\n\n── {label} ──\n{text}"


def openai_router(state: ServerState) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"],
                       responses={400: _OAI_ERROR, 401: _OAI_ERROR, 404: _OAI_ERROR})
    reg = state.registry

    def model(name: str) -> dict[str, Any]:
        created = 0
        for folder in (state.settings.knowledge_dir / name, state.settings.vector_store_dir / name):
            if folder.exists():
                created = int(folder.stat().st_mtime)
                break
        return {"id": name, "object": "model", "created": created, "owned_by": "kbqa"}

    @router.get("/models", response_model=ModelList, summary="The knowledge bases, as models")
    def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model(n) for n in reg.names()]}

    @router.get("/models/{model_id}", response_model=ModelOut, summary="One knowledge base, as a model")
    def get_model(model_id: str) -> dict[str, Any]:
        if model_id not in reg.names():
            raise NotFoundError(f"no knowledge base {model_id!r} (GET /v1/models lists them)")
        return model(model_id)

    @router.post(
        "/chat/completions", response_model=ChatCompletionOut, summary="Chat with a knowledge base",
        description="`model` is the knowledge base. Non-streaming: a `chat.completion` plus top-level `sources` "
                    "and `kbqa`. `stream: true`: `chat.completion.chunk` events, the last one (finish_reason "
                    "'stop') carrying `sources` and `kbqa`, then `data: [DONE]`.",
        responses={200: {"content": {"text/event-stream": {}}}, 503: _OAI_ERROR},
    )
    async def chat_completions(body: ChatCompletionIn) -> Any:
        question, history = question_and_history(body.messages)
        kb = body.model
        if kb not in await run_in_threadpool(reg.names):
            raise NotFoundError(f"no knowledge base {kb!r}: `model` names the knowledge base (GET /v1/models "
                                "lists them)")
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        if not body.stream:
            def run() -> Answer:
                with reg.reading(kb) as base:
                    return base.ask(question, history, k=body.k, min_score=body.min_score)
            answer = await run_in_threadpool(run)
            return JSONResponse({
                "id": cid, "object": "chat.completion", "created": created, "model": kb,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": answer.tokens, "total_tokens": answer.tokens},
                **extras(answer),
            })

        def produce() -> Iterator[str | Answer]:
            with reg.reading(kb) as base:
                # OpenAI chunks have no place for sources before the text: they ride on the last chunk
                for item in base.ask_stream(question, history, k=body.k, min_score=body.min_score):
                    if not isinstance(item, Retrieved):
                        yield item

        def live_text() -> bool:
            with reg.reading(kb) as base:
                return not rewrites_answers(base)

        live = await run_in_threadpool(live_text)
        items = stream_from_thread(produce)
        first = await first_item(items)
        usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> dict[str, Any]:
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": kb,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **more}

        async def events() -> AsyncIterator[str]:
            streamed: list[str] = []
            try:
                yield sse_data(chunk({"role": "assistant", "content": ""}))
                item: str | Answer = first
                while not isinstance(item, Answer):
                    if live:
                        streamed.append(item)
                        yield sse_data(chunk({"content": item}))
                    item = await anext(items)
                if rest := tail_after("".join(streamed), item):
                    yield sse_data(chunk({"content": rest}))
                yield sse_data(chunk({}, "stop", **extras(item)))
                if usage:
                    yield sse_data({"id": cid, "object": "chat.completion.chunk", "created": created, "model": kb,
                                    "choices": [], "usage": {"prompt_tokens": 0, "completion_tokens": item.tokens,
                                                             "total_tokens": item.tokens}})
            except (KbqaError, StopAsyncIteration) as exc:
                message = str(exc) if isinstance(exc, KbqaError) else "the answer chain ended without an answer"
                yield sse_data({"error": {"message": message, "type": "server_error", "param": None, "code": None}})
            finally:
                await items.aclose()
            yield sse_data("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)

    return router
