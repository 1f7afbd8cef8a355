"""Each family's chat prompt and stop tokens, as their own code builds them.

- ChatGLM-6B (v1): see kbqa.llm.glm.v1.v1_chat_ids; stops at `<eop>`.
- ChatGLM2-6B (`tokenizer.build_prompt` + `tokenizer(prompt)`): `[gMASK] sop` then
  "[Round 1]\\n\\n问：{q}\\n\\n答：{a}\\n\\n…[Round n]\\n\\n问：{query}\\n\\n答：" as plain text; it
  knows no system role, so the system text goes before the first question; stops at `</s>`.
- ChatGLM3-6B (`tokenizer.build_chat_input`): `[gMASK] sop`, then per message
  `<|role|>` + encode(metadata + "\\n") + encode(content), then `<|assistant|>`; stops at `</s>`,
  `<|user|>`, `<|observation|>` (its `chat()` passes those three as eos ids).
- GLM-4-9B-Chat (the chat template in tokenizer_config.json): `[gMASK]<sop>`, then per message
  `<|role|>` + "{metadata}\\n{content}", then `<|assistant|>`; stops at the config's eos ids
  (`<|endoftext|>`, `<|user|>`, `<|observation|>`). Upstream renders the template to text and
  tokenises it, so role-token strings inside a document would become role tokens; kbqa encodes
  content as plain text (same ids for any content without those strings).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kbqa.errors import LLMError
from kbqa.llm.base import Message
from kbqa.llm.glm.tokenizers import GlmTokenizerBase, SentencePieceGlmTokenizer, TiktokenGlmTokenizer
from kbqa.llm.glm.v1 import V1Tokenizer, v1_chat_ids


def qa_pairs(messages: Sequence[Message]) -> tuple[str, list[tuple[str, str]]]:
    """(query, [(question, answer), …]) for ChatGLM2: system text before the first question."""
    if not messages:
        raise LLMError("no messages to answer")
    *earlier, last = messages
    query = last["content"]
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for m in earlier:
        if m["role"] == "user":
            if pending is not None:
                pairs.append((pending, ""))
            pending = m["content"]
        elif m["role"] == "assistant":
            pairs.append((pending or "", m["content"]))
            pending = None
    if pending is not None:
        query = f"{pending}\n{query}"
    if system:
        if pairs:
            pairs[0] = (f"{system}\n\n{pairs[0][0]}", pairs[0][1])
        else:
            query = f"{system}\n\n{query}"
    return query, pairs


def chatglm2_prompt(query: str, history: Sequence[tuple[str, str]]) -> str:
    text = "".join(f"[Round {i}]\n\n问：{q}\n\n答：{a}\n\n" for i, (q, a) in enumerate(history, start=1))
    return text + f"[Round {len(history) + 1}]\n\n问：{query}\n\n答："


def chat_ids(family: str, tokenizer: GlmTokenizerBase | V1Tokenizer, messages: Sequence[Message]) -> list[int]:
    """The prompt token ids for `messages` (system/user/assistant), ending where the model answers."""
    if not messages:
        raise LLMError("no messages to answer")
    if family == "chatglm-6b" and isinstance(tokenizer, V1Tokenizer):
        return v1_chat_ids(tokenizer, messages)
    if isinstance(tokenizer, V1Tokenizer):
        raise LLMError(f"the ChatGLM-6B tokenizer does not fit the family {family!r}")
    if family == "chatglm2":
        query, history = qa_pairs(messages)
        return tokenizer.prefix() + tokenizer.encode_text(chatglm2_prompt(query, history))
    ids = tokenizer.prefix()
    for m in messages:
        role = m["role"] if m["role"] in ("system", "user", "assistant", "observation") else "user"
        content = m["content"]
        if family == "chatglm3" and isinstance(tokenizer, SentencePieceGlmTokenizer):
            ids += [tokenizer.special(f"<|{role}|>"), *tokenizer.encode_text("\n"), *tokenizer.encode_text(content)]
        elif isinstance(tokenizer, TiktokenGlmTokenizer):
            if content:  # the template skips empty messages
                ids += [tokenizer.special(f"<|{role}|>"), *tokenizer.encode_plain(f"\n{content}")]
        else:
            raise LLMError(f"no chat format for the family {family!r}")
    return [*ids, tokenizer.special("<|assistant|>")]


def stop_ids(family: str, tokenizer: GlmTokenizerBase | V1Tokenizer, config: dict[str, Any]) -> list[int]:
    """Token ids that end the answer."""
    ids: list[int] = [tokenizer.eos_token_id]
    configured = config.get("eos_token_id")
    for value in configured if isinstance(configured, list) else [configured]:
        if isinstance(value, int) and value not in ids:
            ids.append(value)
    if family in ("chatglm3", "glm4"):
        for token in ("<|user|>", "<|observation|>"):
            if tokenizer.special(token) not in ids:
                ids.append(tokenizer.special(token))
    return ids
