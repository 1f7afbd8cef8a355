"""The answer chain: condense → retrieve → refuse or prompt → generate (streamed) → cite.

`AnswerChain.stream` yields the answer's text pieces as the model produces them and then
exactly one final `Answer`, whose `text` is authoritative: when the LLM's answer is
unusable (it cites nothing the sources support, or the model cannot serve the question's
language) the chain answers extractively instead and the final text differs from the
streamed pieces. `ask` is `stream` run to the end.

Written by hand rather than as a langchain `create_retrieval_chain`: the refusal gate,
window-aware context packing, marker clean-up and the extractive fallback all need the
per-source scores and numbers, which langchain's document chains do not carry through.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from kbqa.citations import attribute, support_check
from kbqa.citations import cite as _cite
from kbqa.citations import cited as _cited
from kbqa.citations import is_cjk_text as _is_cjk_text
from kbqa.citations import sentences as _sentences
from kbqa.citations import strip_markers as _strip_markers
from kbqa.config import AnswerSettings, LLMSettings
from kbqa.context import focus_sources
from kbqa.embeddings import KbqaEmbeddings
from kbqa.errors import LLMError
from kbqa.llm.base import ChatBackend, Message
from kbqa.model_text import DONT_KNOW, clean_markers, drop_dangling, drop_scaffolding, looping, norm_text
from kbqa.prompts import (
    QUOTES_LABEL,
    condense_messages,
    detect_language,
    format_source,
    not_found_text,
    qa_messages,
)
from kbqa.refusal import unknown_words
from kbqa.schema import Answer, Retrieved, Source
from kbqa.tokenize import STOPWORDS, Tokenizer

History = Sequence[Mapping[str, str]] | Sequence[tuple[str, str]] | None


class Searcher(Protocol):
    def search(self, query: str, k: int | None = None, min_score: float | None = None) -> list[Source]: ...

    def term_weights(self, terms: Sequence[str]) -> dict[str, float]: ...

    def doc_freqs(self, terms: Sequence[str]) -> dict[str, int]: ...

    def has_phrase(self, terms: Sequence[str]) -> bool: ...


# A follow-up that leans on the previous turn: pronouns, ellipsis, "and …?", "…呢".
_FOLLOW_UP_EN = re.compile(
    r"\b(it|its|they|them|their|this|that|these|those|he|she|one|ones|former|latter|above|same|other|"
    r"second|third|first|last|also|more|else)\b|^(and|but|what about|how about|or)\b", re.I
)
_FOLLOW_UP_ZH = re.compile(
    r"它|他们|她们|它们|这个|那个|这些|那些|这种|那种|其|该|此|上述|呢[？?]?$|^那|^还有|第[一二三四五六七八九十\d]+个|另一"
)


@dataclass(slots=True)
class _Draft:
    text: str
    cited: list[int]


class AnswerChain:
    """Answers questions from a searcher's sources with an optional LLM. Injected, no globals."""

    def __init__(
        self,
        searcher: Searcher,
        llm: ChatBackend | None,
        settings: AnswerSettings,
        llm_settings: LLMSettings,
        tokenizer: Tokenizer,
        embeddings: KbqaEmbeddings | None = None,
    ) -> None:
        self.searcher = searcher
        self.llm = llm
        self.settings = settings
        self.llm_settings = llm_settings
        self.tokenizer = tokenizer
        self.embeddings = embeddings

    # -- public --------------------------------------------------------------------------
    def ask(self, question: str, history: History = None, *, k: int | None = None,
            min_score: float | None = None) -> Answer:
        for item in self.stream(question, history, k=k, min_score=min_score):
            if isinstance(item, Answer):
                return item
        raise AssertionError("AnswerChain.stream ended without an Answer")  # pragma: no cover

    def stream(self, question: str, history: History = None, *, k: int | None = None,
               min_score: float | None = None) -> Iterator[str | Retrieved | Answer]:
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        question = question.strip()
        language = detect_language(question)
        turns = _as_messages(history)[-2 * self.settings.history_turns:] if self.settings.history_turns else []
        standalone = self.condense(question, turns, language, timings)

        t = time.perf_counter()
        threshold = self.settings.min_score if min_score is None else min_score
        n_sources = k or self.settings.max_sources
        found = self.searcher.search(standalone, k=n_sources, min_score=0.0) if question else []
        timings["retrieve"] = _ms(t)
        base = Answer(text="", refused=False, sources=[], mode="generative", question=question,
                      standalone_question=standalone, language=language, model=self._model_name())

        relevant = [s for s in found if s.score >= threshold]
        unknown = unknown_words(standalone, language, self.tokenizer.terms, self.searcher.doc_freqs,
                                self.searcher.has_phrase) \
            if relevant and self.settings.refuse_unknown_terms else []
        if not relevant or unknown:
            best = f"{found[0].score:.2f}" if found else "none"
            why = (f"the knowledge base never mentions {', '.join(repr(w) for w in unknown)}" if unknown else
                   f"no source reached the relevance threshold {threshold:.2f} (best: {best})")
            timings["generate"] = 0.0
            timings["total"] = _ms(t0)
            text = not_found_text(language)
            yield text
            yield replace(base, text=text, refused=True, mode="refused", model="", timings_ms=timings,
                          note=why)
            return

        sources = [replace(s, n=i) for i, s in enumerate(relevant, 1)]
        reason = self._extractive_reason(language)
        t = time.perf_counter()
        if reason:
            draft = self.extract(standalone, sources)
            timings["generate"] = _ms(t)
            timings["total"] = _ms(t0)
            yield draft.text
            yield replace(base, text=draft.text, sources=sources, cited=draft.cited, mode="extractive", note=reason,
                          model="", timings_ms=timings)
            return

        assert self.llm is not None
        pieces: list[str] = []
        try:
            # counting tokens loads the model's tokenizer: its failure falls back like a generation failure
            messages, sources = self._prompt(question, standalone, turns, sources, language)
            yield Retrieved(sources)
            for piece in self.llm.stream(messages, max_tokens=self.llm_settings.max_new_tokens,
                                         temperature=self.llm_settings.temperature):
                if not pieces:
                    timings["first_token"] = _ms(t)
                pieces.append(piece)
                yield piece
                if len(pieces) % 16 == 0 and looping("".join(pieces)):
                    break  # closing the generator stops the backend
        except LLMError as exc:
            if self.settings.fallback == "never":
                raise
            draft = self.extract(standalone, sources)
            timings["generate"] = _ms(t)
            timings["total"] = _ms(t0)
            yield replace(base, text=draft.text, sources=sources, cited=draft.cited, mode="extractive",
                          note=f"the LLM failed ({exc}); answered with the best-matching source sentences",
                          model="", timings_ms=timings)
            return
        timings["generate"] = _ms(t)
        raw = "".join(pieces).strip()
        answer = self._finish(raw, standalone, sources, base)
        answer.tokens = len(pieces)
        answer.timings_ms = {**timings, "total": _ms(t0)}
        yield answer

    # -- steps ---------------------------------------------------------------------------
    def condense(self, question: str, turns: Sequence[Message], language: str,
                 timings: dict[str, float] | None = None) -> str:
        """A follow-up rewritten as a standalone question (unchanged when there is no history).

        A capable LLM rewrites it; the bundled one is too small to do that reliably, so a
        rule does instead: a question that leans on the previous turn (pronouns, "and …?",
        very short) is searched together with the previous standalone question.
        """
        previous = [m["content"] for m in turns if m["role"] == "user"]
        if not previous or not question:
            return question
        if self.llm is not None and self._llm_condenses(language):
            t = time.perf_counter()
            try:
                rewritten = "".join(self.llm.stream(condense_messages(question, turns, language),
                                                    max_tokens=96, temperature=0.0)).strip()
            except LLMError:
                rewritten = ""
            if timings is not None:
                timings["condense"] = _ms(t)
            rewritten = rewritten.splitlines()[0].strip() if rewritten else ""
            if 0 < len(rewritten) <= 4 * len(question) + 200:
                return rewritten
        if _leans_on_history(question, language):
            return f"{previous[-1]} {question}"
        return question

    def extract(self, question: str, sources: Sequence[Source], min_ratio: float | None = None) -> _Draft:
        """The sentences of the sources that best answer the question, each cited.

        A sentence scores by the idf-weighted share of the question's terms it contains,
        plus (if embeddings are given) its calibrated similarity to the question, plus a
        little of its source's own score so ties go to the better source.
        """
        q_terms = [t for t in self.tokenizer.query_terms(question) if t not in STOPWORDS]
        weights = self.searcher.term_weights(q_terms) if q_terms else {}
        candidates: list[tuple[int, int, str]] = []  # (source n, position, sentence)
        for s in sources:
            for pos, sent in enumerate(_sentences(s.text)):
                if not sent.rstrip().endswith(("?", "？")):  # a FAQ's question restates, it does not answer
                    candidates.append((s.n, pos, sent))
        if not candidates:
            return _Draft("", [])
        total = sum(weights.values()) or 1.0
        lexical = np.array([
            sum(w for t, w in weights.items() if t in set(self.tokenizer.terms(sent))) / total
            for _, _, sent in candidates
        ])
        semantic = np.zeros(len(candidates))
        if self.embeddings is not None:
            vecs = self.embeddings.encode([c[2] for c in candidates])
            qvec = self.embeddings.encode_queries([question])[0]
            semantic = np.clip((np.asarray(vecs) @ np.asarray(qvec) - 0.1) / 0.6, 0.0, 1.0)
        by_n = {s.n: s.score for s in sources}
        prior = np.array([by_n[n] for n, _, _ in candidates])
        # Bilingual documents: prefer sentences in the question's language.
        same = np.array([1.0 if detect_language(c[2]) == detect_language(question) else 0.5 for c in candidates])
        score = (0.5 * lexical + 0.4 * semantic + 0.1 * prior) * same
        order = np.argsort(-score, kind="stable")
        best = float(score[order[0]])
        chosen: list[int] = []
        for i in order:
            ratio = EXTRACT_MIN_RATIO if min_ratio is None else min_ratio
            if len(chosen) >= self.settings.extractive_sentences or float(score[i]) < ratio * best:
                break
            if any(candidates[i][2] in candidates[j][2] or candidates[j][2] in candidates[i][2] for j in chosen):
                continue
            chosen.append(int(i))
        # Read in document order within a source, best source first.
        rank = {n: r for r, n in enumerate(dict.fromkeys(candidates[i][0] for i in chosen))}
        chosen.sort(key=lambda i: (rank[candidates[i][0]], candidates[i][1]))
        parts = [_cite(candidates[i][2], candidates[i][0]) for i in chosen]
        joiner = "" if all(_is_cjk_text(p) for p in parts) else " "
        cited = sorted({candidates[i][0] for i in chosen})
        return _Draft(joiner.join(parts), cited)

    # -- helpers -------------------------------------------------------------------------
    def _model_name(self) -> str:
        return self.llm.name if self.llm is not None else ""

    def _extractive_reason(self, language: str) -> str:
        if self.llm is None:
            return "no LLM configured (llm.backend: extractive); answered with the best-matching source sentences"
        if self.settings.fallback == "always":
            return "answer.fallback is 'always'; answered with the best-matching source sentences"
        langs = self.llm.languages
        if self.settings.fallback == "auto" and langs is not None and language not in langs:
            return (f"the LLM ({self.llm.name}) does not answer {_LANG_NAME.get(language, language)}; "
                    "answered with the best-matching source sentences")
        return ""

    def _llm_condenses(self, language: str) -> bool:
        """Small models (SmolLM2-135M, Qwen2.5-0.5B) cannot rewrite questions reliably; larger models can."""
        assert self.llm is not None
        if getattr(self.llm, "small", False):
            return False
        return self.llm.languages is None or language in self.llm.languages

    def _prompt(self, question: str, standalone: str, turns: Sequence[Message], sources: list[Source],
                language: str) -> tuple[list[Message], list[Source]]:
        """Messages for the LLM with as many sources as fit its window, best first."""
        assert self.llm is not None
        q = standalone if standalone != question else question
        budget = self.llm.context_window - self.llm_settings.max_new_tokens - 16
        small = bool(getattr(self.llm, "small", False))
        fixed = sum(self.llm.count_tokens(m["content"]) + 8 for m in qa_messages(q, [], language, small=small))
        budget -= fixed
        full = {s.n: s for s in sources}
        if self.settings.context_tokens:
            q_terms = [t for t in self.tokenizer.query_terms(q) if t not in STOPWORDS]
            sources = focus_sources(q, sources, budget=min(self.settings.context_tokens, budget),
                                    count_tokens=self.llm.count_tokens, tokenizer=self.tokenizer,
                                    weights=self.searcher.term_weights(q_terms) if q_terms else {})
        kept: list[Source] = []
        for s in sources:
            cost = self.llm.count_tokens(format_source(s, language)) + 2
            if cost <= budget:
                kept.append(s)
                budget -= cost
            elif not kept and budget > 64:  # the best source alone is too long: keep its head
                kept.append(replace(s, text=_cut_to_tokens(self.llm, s, budget, language)))
                break
            else:
                break
        # The prompt reads the focused text; the answer is checked against (and shows) the whole sources.
        return qa_messages(q, kept, language, small=small), [full[s.n] for s in kept]

    def _finish(self, raw: str, question: str, sources: list[Source], base: Answer) -> Answer:
        valid = {s.n for s in sources}
        text = drop_dangling(clean_markers(drop_scaffolding(raw, sources), valid))
        cited = _cited(text)
        if DONT_KNOW.search(text) and len(text) < 400:
            return replace(base, text=_strip_markers(text), refused=True, mode="refused", sources=sources, cited=[],
                           note="the LLM found no answer in the retrieved sources")
        guarded = self.guarded()
        checked: list[str] = []
        if cited and not guarded:  # a capable model's own words, each sentence held to the source it cites
            check = support_check(text, sources, self.tokenizer, question)
            if check.dropped:
                checked.append(f"{check.dropped} sentence(s) no source supports were dropped")
            if check.recited:
                checked.append(f"{check.recited} sentence(s) re-cited by the source that holds them")
            text, cited = check.text, _cited(check.text)
        if guarded or not cited:
            # A small model's own markers are unreliable: every sentence is re-checked against
            # the sources and cited by the one it comes from; unsupported ones are dropped.
            attributed = attribute(_strip_markers(text) if guarded else text, sources, self.tokenizer, question)
            if _cited(attributed) or self.settings.fallback != "never":
                text = attributed
                cited = _cited(text)
        if cited or self.settings.fallback == "never":
            by_model = bool(_cited(clean_markers(raw, valid)))
            notes = [] if by_model or not cited else ["citations added by matching answer sentences to sources"]
            notes += checked
            if guarded:
                notes = ["small model: only answer sentences a source supports are kept, each cited by that source"]
            if cited and guarded:
                quoted, cited = self._with_quotes(text, question, sources, base.language)
                if quoted != text:
                    notes.append("the best-matching source sentences are quoted under it")
                text = quoted
            return replace(base, text=text, sources=sources, cited=cited, note="; ".join(notes))
        draft = self.extract(question, sources)
        return replace(base, text=draft.text, sources=sources, cited=draft.cited, mode="extractive", model="",
                       note=f"the LLM's answer ({self.llm.name if self.llm else ''}) was not supported by the "
                            "sources; answered with the best-matching source sentences")

    def guarded(self) -> bool:
        """Hold a small model's answer to its sources (`answer.small_model_guard`).

        Measured on the dev set, the bundled 135M model's own answers hold the asked-for facts
        far less often than the best-matching source sentences do, and its `[n]` markers are
        often wrong (README, "How well it answers"). So for such a model only sentences a
        source supports are kept, re-cited by that source, and the exact source sentences are
        quoted under the answer.
        """
        if self.settings.small_model_guard != "auto":
            return self.settings.small_model_guard == "on"
        return self.llm is not None and bool(getattr(self.llm, "small", False))

    def _with_quotes(self, text: str, question: str, sources: Sequence[Source], language: str
                     ) -> tuple[str, list[int]]:
        draft = self.extract(question, sources, min_ratio=0.85)  # only quotes nearly as good as the best
        have = norm_text(_strip_markers(text))
        quotes = [q for q in _sentences(draft.text) if norm_text(_strip_markers(q)) not in have]
        if not quotes:
            return text, _cited(text)
        label = QUOTES_LABEL.get(language, QUOTES_LABEL["en"])
        joined = "\n".join(f"> {q}" for q in quotes)
        full = f"{text}\n\n{label}\n{joined}"
        return full, _cited(full)


_LANG_NAME = {"zh": "Chinese", "en": "English"}
# A sentence joins the extractive answer only if it scores at least this share of the best one
# (benchmarks/sweep_extractive.py: 0.8 lifts citation precision at the same accuracy).
EXTRACT_MIN_RATIO = 0.8


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


def _as_messages(history: History) -> list[Message]:
    out: list[Message] = []
    for item in history or []:
        if isinstance(item, dict):
            out.append(Message(role=str(item.get("role", "user")), content=str(item.get("content", ""))))
        else:
            q, a = item
            out += [Message(role="user", content=q), Message(role="assistant", content=a)]
    return out


def _leans_on_history(question: str, language: str) -> bool:
    if language == "zh":
        return bool(_FOLLOW_UP_ZH.search(question)) or len(question) <= 8
    return bool(_FOLLOW_UP_EN.search(question)) or len(question.split()) <= 4


def _cut_to_tokens(llm: ChatBackend, source: Source, budget: int, language: str) -> str:
    """The longest head of the source's text that fits `budget` tokens (binary search on chars)."""
    lo, hi = 0, len(source.text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if llm.count_tokens(format_source(replace(source, text=source.text[:mid]), language)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return source.text[:lo]

