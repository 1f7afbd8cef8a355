"""Deterministic stand-ins for tests and demos: no weights, no downloads, microseconds per text.

`FakeEmbeddings` hashes a text's features into a small vector, so texts that share words
(Latin script) or characters and character bigrams (CJK) point in similar directions. That is
enough to exercise retrieval, fusion and thresholds in unit tests; it knows no synonyms.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator

import numpy as np

from kbqa.embeddings.base import KbqaEmbeddings

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_TEXT_WEIGHT = 0.02
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")


def _features(text: str) -> Iterator[str]:
    """Lower-cased words of non-CJK runs; single characters and bigrams of CJK runs."""
    for token in _WORD.findall(text.lower()):
        run: list[str] = []
        latin: list[str] = []
        for ch in token:
            if _CJK.match(ch):
                if latin:
                    yield "w:" + "".join(latin)
                    latin = []
                run.append(ch)
            else:
                if run:
                    yield from _cjk_features(run)
                    run = []
                latin.append(ch)
        if latin:
            yield "w:" + "".join(latin)
        if run:
            yield from _cjk_features(run)


def _cjk_features(run: list[str]) -> Iterator[str]:
    for i, ch in enumerate(run):
        yield "c:" + ch
        if i + 1 < len(run):
            yield "b:" + ch + run[i + 1]


class FakeEmbeddings(KbqaEmbeddings):
    """Feature hashing into `dimension` buckets with a hashed sign, L2-normalised.

    Deterministic across processes and platforms (crc32, not Python's salted `hash`). Text with
    no features (empty, punctuation only) maps to a fixed unit vector, never to zeros.
    """

    def __init__(self, dimension: int = 64, batch_size: int = 64) -> None:
        if dimension < 2:
            raise ValueError(f"dimension must be >= 2, got {dimension}")
        self._dim = dimension
        self.batch_size = batch_size
        self.model_id = f"fake-hash-{dimension}"

    @property
    def dimension(self) -> int:
        return self._dim

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in _features(text):
                h = zlib.crc32(feature.encode("utf-8"))
                out[row, h % self._dim] += 1.0 if (h >> 16) & 1 else -1.0
            if not out[row].any():
                out[row, 0] = 1.0
            # A faint whole-text feature: like a real model, two different texts never get the
            # exact same vector (so rankings have no exact ties that depend on insertion order).
            h = zlib.crc32(text.encode("utf-8"))
            out[row, h % self._dim] += _TEXT_WEIGHT * np.linalg.norm(out[row])
        return out


class FakeChatModel:
    """A deterministic `ChatBackend`: answers with the first sentence of source [1], cited.

    It reads the numbered sources out of the last user message (the `[n] ...` lines kbqa's
    prompt writes), so tests see a real citation flow. `reply` overrides the answer, `calls`
    records every message list it was given, and `languages` can be narrowed to exercise the
    language fallback.
    """

    name = "fake"

    def __init__(self, reply: str | None = None, languages: frozenset[str] | None = None,
                 window: int = 2048) -> None:
        self.reply = reply
        self.languages = languages
        self.calls: list[list[dict[str, str]]] = []
        self._window = window

    @property
    def context_window(self) -> int:
        return self._window

    def count_tokens(self, text: str) -> int:
        return len(_WORD.findall(text)) + len(_CJK.findall(text))

    def stream(self, messages, *, max_tokens, temperature, stop=()):  # type: ignore[no-untyped-def]
        self.calls.append([dict(m) for m in messages])
        text = self.reply if self.reply is not None else self._answer(messages[-1]["content"])
        yield from re.findall(r"\S+\s*", text)[:max_tokens]

    @staticmethod
    def _answer(prompt: str) -> str:
        match = re.search(r"^\[1\][^\n]*\n?(.+?)(?:\n\[2\]|\n\n|$)", prompt, re.S | re.M)
        if not match:
            return "I don't know."
        first = re.split(r"(?<=[.!?。！？])\s*", match.group(1).strip(), maxsplit=1)[0]
        first = first.strip()
        end = first[-1] if first and first[-1] in ".!?。！？" else ""
        return f"{first[:-1] if end else first} [1]{end}"
