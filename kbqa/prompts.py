"""Prompt text, in the question's language: Chinese questions get Chinese instructions.

Kept apart from the chain so wording can change (and be tested) without touching logic.
Sources are numbered `[1]..[k]` in the user message; the model is told to answer only
from them and to cite the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

from kbqa.lang import CJK_CHAR as CJK_CHAR  # re-exported: callers import them from here too
from kbqa.lang import detect_language as detect_language
from kbqa.llm.base import Message
from kbqa.schema import Source

SYSTEM = {
    "en": (
        "You are a helpful assistant that answers questions about the user's documents. "
        "Answer only from the numbered sources. After each fact, cite its source number in square "
        "brackets, like [1]. Be brief. If the sources do not contain the answer, say: "
        "\"The documents do not say.\""
    ),
    "zh": (
        "你是一个根据用户文档回答问题的助手。只根据下面编号的资料回答，每个事实后用方括号标注资料编号，"
        "例如 [1]。回答要简洁，使用中文。如果资料中没有答案，请回答：“资料中没有提到。”"
    ),
}

# For models that follow instructions (Qwen2.5-1.5B and up). Probed on the bundled Qwen: a quoted
# refusal phrase ("say: 'The documents do not say.'") made it refuse answerable questions, and a
# trailing "Answer (cite …):" label made it reply with a bare marker; a paraphrased "do not guess"
# rule and the plain question did neither.
SYSTEM_CAPABLE = {
    "en": (
        "You are a helpful assistant that answers questions about the user's documents. Answer only from "
        "the numbered sources and cite the source number in square brackets after each fact, like [1]. "
        "Be brief. Do not guess: when the sources do not cover the question, say that the documents do not "
        "mention it."
    ),
    "zh": (
        "你是根据用户文档回答问题的助手。只根据编号资料回答，用完整的中文句子简洁作答，每句话在句号前用方括号注明"
        "资料编号，例如“……[1]。”。不要猜测：如果资料没有涉及这个问题，就说明资料中没有提到。"
    ),
}
# The Chinese rule asks for whole sentences: told only to "answer briefly" Qwen replied with a bare
# 两年 (no subject, no marker) to 保修期是多长时间？ on the sample files.

NOT_FOUND = {
    "en": "Not found in the knowledge base: no document matches this question closely enough.",
    "zh": "知识库中没有找到相关内容：没有文档与这个问题足够相关。",
}

QUOTES_LABEL = {"en": "From the documents:", "zh": "原文摘录："}

_LABELS = {
    "en": ("Sources", "Question", "Answer (cite sources like [1])", "p."),
    "zh": ("资料", "问题", "回答（用 [1] 这样的编号注明出处）", "第{}页"),
}

CONDENSE = {
    "en": (
        "Rewrite the last question so that it can be understood without the conversation. "
        "Keep its language, and keep the names, codes and numbers it refers to (such as an error code "
        "or a model name) as they were written. Reply with the rewritten question only."
    ),
    "zh": "根据对话，把最后一个问题改写成不依赖上下文、可以单独理解的完整问题，保留它所指的名称、代码和数字"
          "（例如错误代码、型号）原样不变。只输出改写后的问题。",
}


def not_found_text(language: str) -> str:
    return NOT_FOUND.get(language, NOT_FOUND["en"])


def _where(source: Source, language: str) -> str:
    page_fmt = _LABELS.get(language, _LABELS["en"])[3]
    parts = [source.file]
    if source.page is not None:
        parts.append(page_fmt.format(source.page) if "{}" in page_fmt else f"{page_fmt}{source.page}")
    if source.heading:
        parts.append(source.heading)
    return " — ".join(parts)


def format_source(source: Source, language: str = "en") -> str:
    """One numbered source as the model sees it: `[n] file p.X — heading` then its text."""
    return f"[{source.n}] {_where(source, language)}\n{source.text.strip()}"


def qa_messages(question: str, sources: Sequence[Source], language: str, *, small: bool = True) -> list[Message]:
    """System rules then the numbered sources and the question. `small` models get the scaffolded
    form (an explicit answer label); capable ones the plain question (see SYSTEM_CAPABLE)."""
    label_src, label_q, label_a, _ = _LABELS.get(language, _LABELS["en"])
    context = "\n\n".join(format_source(s, language) for s in sources)
    colon = "：" if language == "zh" else ": "
    if small:
        user = f"{label_src}:\n\n{context}\n\n{label_q}: {question}\n{label_a}:"
        system = SYSTEM.get(language, SYSTEM["en"])
    else:
        user = f"{label_src}{colon.strip()}\n\n{context}\n\n{label_q}{colon}{question}"
        system = SYSTEM_CAPABLE.get(language, SYSTEM_CAPABLE["en"])
    return [Message(role="system", content=system), Message(role="user", content=user)]


def condense_messages(question: str, turns: Sequence[Message], language: str) -> list[Message]:
    convo = "\n".join(f"{m['role']}: {m['content'][:600]}" for m in turns)
    label_q = _LABELS.get(language, _LABELS["en"])[1]
    return [
        Message(role="system", content=CONDENSE.get(language, CONDENSE["en"])),
        Message(role="user", content=f"{convo}\nuser: {question}\n\n{label_q}:"),
    ]
