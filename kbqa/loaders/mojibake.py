"""Repair of UTF-8 text that was once decoded as a Windows code page ("mojibake").

A tool that reads UTF-8 as cp1252 and saves the result turns "本设备" into "æœ¬è®¾å¤‡"
and silently drops the five bytes cp1252 leaves undefined (or writes '?'/U+FFFD), so
ftfy, which needs every byte, recovers well under half of such Chinese. Here each
character is mapped back to its byte, UTF-8 is decoded again, and a sequence with a
lost byte is completed with whichever lost byte gives the CJK character that best
fits its neighbours (jieba's word frequencies). Public entry: `kbqa.encoding`.
"""

from __future__ import annotations

import itertools
import math
import re
from functools import lru_cache

# Code pages a UTF-8 file gets misread as, and the bytes each leaves undefined
# (a decoder drops those, or writes '?' / U+FFFD in their place).
_CODEPAGES: tuple[tuple[str, bytes], ...] = (
    ("cp1252", bytes([0x81, 0x8D, 0x8F, 0x90, 0x9D])),
    ("cp1254", bytes([0x81, 0x8D, 0x8E, 0x8F, 0x90, 0x9D, 0x9E])),
)
_LOST_MARKERS = frozenset("?\ufffd")
# Two or more characters a UTF-8 lead byte + continuation byte turn into, e.g. "ä¸", "Ã©", "æ˜".
_CONTINUATION_CHARS = "".join(
    sorted({bytes([b]).decode(cp, "ignore") for b in range(0x80, 0xC0) for cp in ("cp1252", "latin-1")} - {""})
)
_SIGNATURE_RE = re.compile("[\u00c2-\u00f4][" + re.escape(_CONTINUATION_CHARS) + "]")


@lru_cache(maxsize=65536)
def in_gb2312(ch: str) -> bool:
    """True if `ch` is in GB2312, i.e. a common simplified-Chinese character or mark."""
    try:
        ch.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return True


@lru_cache(maxsize=4)
def _byte_table(codepage: str) -> dict[str, int]:
    """char → the byte it came from, for `codepage` (plus latin-1's C1 controls)."""
    table = {chr(b): b for b in range(0x80, 0xA0)}  # latin-1 / WHATWG-style C1 controls
    for b in range(0x80, 0x100):
        try:
            table[bytes([b]).decode(codepage)] = b
        except UnicodeDecodeError:
            continue
    return table


def _plausible_filled(ch: str) -> bool:
    """Characters accepted when a lost byte had to be guessed: CJK and typographic punctuation."""
    code = ord(ch)
    return (
        0x2000 <= code <= 0x206F
        or 0x2E80 <= code <= 0x9FFF
        or 0xAC00 <= code <= 0xD7AF
        or 0xF900 <= code <= 0xFAFF
        or 0xFF00 <= code <= 0xFFEF
        or 0x1F000 <= code <= 0x1FAFF
        or 0x20000 <= code <= 0x3134F
    )


@lru_cache(maxsize=1)
def _word_freq() -> dict[str, int]:
    """jieba's dictionary frequencies, to choose between guesses by their neighbours (lazy)."""
    try:
        import jieba
    except ImportError:
        return {}
    jieba.setLogLevel(60)
    jieba.initialize()
    return jieba.dt.FREQ  # type: ignore[no-any-return]


_WORD_BONUS = 12.0
_KEEP = "\x00keep"  # stands for "leave this lead byte's character unrepaired"
# A lead byte alone is garbage in mojibake text, so any common hanzi (GB2312, seen by jieba) beats keeping it.
_KEEP_SCORE = 4.0
# Prior for punctuation, which jieba does not count: the common marks win ties ("、" over "【").
_PUNCT_PRIOR = {ch: 8.0 for ch in "，。、：；“”（）"} | {ch: 5.0 for ch in "！？《》…—‘’·"}


@lru_cache(maxsize=65536)
def _unigram(cand: str) -> float:
    """A character's own plausibility: frequency, punctuation prior, GB2312 membership."""
    if cand == _KEEP:
        return _KEEP_SCORE
    freq = _word_freq()
    return 0.5 * math.log1p(freq.get(cand, 0)) + _PUNCT_PRIOR.get(cand, 0.0) + (3.0 if in_gb2312(cand) else 0.0)


@lru_cache(maxsize=262144)
def _word(word: str) -> float:
    """Bonus if `word` is one jieba knows: a longer word beats any frequency."""
    count = _word_freq().get(word)
    return _WORD_BONUS * (len(word) - 1) + 0.5 * math.log(count) if count else 0.0


_State = tuple[str, str]  # (previous char, current char)


def _best_path(slots: list[list[str]]) -> list[str]:
    """Second-order Viterbi: the candidate sequence with the best unigram + word score."""
    scores: dict[_State, float] = {("", ""): 0.0}
    back: list[dict[_State, _State]] = []
    for cands in slots:
        nxt: dict[_State, float] = {}
        ptr: dict[_State, _State] = {}
        for (p2, p1), score in scores.items():
            for c in cands:
                total = score + _unigram(c) + _word(p1 + c) + (_word(p2 + p1 + c) if p2 else 0.0)
                if total > nxt.get((p1, c), -math.inf):
                    nxt[(p1, c)] = total
                    ptr[(p1, c)] = (p2, p1)
        scores = nxt
        back.append(ptr)
    state = max(scores, key=lambda st: scores[st])
    path: list[str] = []
    for ptr in reversed(back):
        path.append(state[1])
        state = ptr[state]
    return path[::-1]


class _Repairer:
    """One pass over a text with one code page's byte table."""

    def __init__(self, text: str, codepage: str, lost: bytes) -> None:
        self.text = text
        self.table = _byte_table(codepage)
        self.lost = lost

    def byte(self, i: int) -> int | None:
        if i >= len(self.text):
            return None
        ch = self.text[i]
        return ord(ch) if ch < "\x80" else self.table.get(ch)

    def candidates(self, i: int) -> tuple[list[str], int, int]:
        """Characters the UTF-8 sequence whose lead byte is at `i` may stand for.

        Returns (candidates, next index, bytes missing). A complete valid sequence gives
        one candidate; a 3/4-byte sequence missing one continuation byte (dropped, or
        written as '?'/U+FFFD) gives every plausible completion; a CJK lead (E3–E9)
        that lost both bytes too. No candidates: not mojibake, keep the character.
        """
        lead = self.byte(i)
        if lead is None or not 0xC2 <= lead <= 0xF4:
            return [], i + 1, 0
        size = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        seq: list[int | None] = [lead]
        j = i + 1
        while len(seq) < size:
            b = self.byte(j)
            if b is not None and 0x80 <= b <= 0xBF:
                seq.append(b)
            elif self.text[j : j + 1] in _LOST_MARKERS:
                seq.append(None)
            else:
                break
            j += 1
        if len(seq) == size and None not in seq:
            try:
                return [bytes(seq).decode("utf-8")], j, 0  # type: ignore[arg-type]
            except UnicodeDecodeError:
                return [], i + 1, 0
        missing = size - len(seq) + seq.count(None)
        limit = 2 if size == 3 and 0xE3 <= lead <= 0xE9 else 1
        if size < 3 or missing > limit:
            return [], i + 1, 0
        return self._fill(seq, size), j, missing

    def _fill(self, seq: list[int | None], size: int) -> list[str]:
        """Every plausible character `seq` can be completed to with lost bytes."""
        partials: list[list[int | None]] = [list(seq)]
        while len(partials[0]) < size:  # dropped bytes: a gap anywhere after the lead
            partials = [[*p[:k], None, *p[k:]] for p in partials for k in range(1, len(p) + 1)]
        cands: list[str] = []
        for partial in partials:
            holes = [k for k, b in enumerate(partial) if b is None]
            for fill in itertools.product(self.lost, repeat=len(holes)):
                raw = list(partial)
                for k, b in zip(holes, fill, strict=True):
                    raw[k] = b
                try:
                    ch = bytes(raw).decode("utf-8")  # type: ignore[arg-type]
                except UnicodeDecodeError:
                    continue
                if _plausible_filled(ch) and ch not in cands:
                    cands.append(ch)
        return cands

    def run(self) -> str:
        """Decode every sequence; resolve guessed characters jointly with their neighbours.

        A slot is one output character's candidates. Slots with several candidates are
        decided by `_best_path` over a window reaching two certain slots either side.
        A CJK lead that lost both continuation bytes may also stay as it was (`_KEEP`),
        when no common character fits there.
        """
        text = self.text
        slots: list[list[str]] = []
        raw: list[str] = []
        i = 0
        while i < len(text):
            cands, j, missing = self.candidates(i) if text[i] >= "\x80" else ([], i + 1, 0)
            if not cands:
                cands, j = [text[i]], i + 1
            elif missing == 2:
                cands = [*cands, _KEEP]
            slots.append(cands)
            raw.append(text[i:j])
            i = j
        out = [c[0] for c in slots]
        ambiguous = [k for k, c in enumerate(slots) if len(c) > 1]
        k = 0
        while k < len(ambiguous):
            end = k
            while end + 1 < len(ambiguous) and ambiguous[end + 1] - ambiguous[end] <= 2:
                end += 1
            lo, hi = max(0, ambiguous[k] - 2), min(len(slots), ambiguous[end] + 3)
            out[lo:hi] = _best_path(slots[lo:hi])
            k = end + 1
        return "".join(raw[n] if c == _KEEP else c for n, c in enumerate(out))


def _mojibake_share(text: str) -> tuple[int, float]:
    """(signature count, share of non-ASCII chars inside signatures) on a sample."""
    sample = text[:100_000]
    hits = len(_SIGNATURE_RE.findall(sample))
    wide = sum(1 for ch in sample if ch >= "\x80")
    return hits, (2 * hits / wide if wide else 0.0)


def repair_mojibake(text: str) -> tuple[str, bool]:
    """Undo UTF-8-read-as-cp1252/cp1254/latin-1 damage; return (text, repaired?).

    Clean text is returned unchanged: repair starts only when lead+continuation
    signatures ("ä¸", "Ã©") make up a large share of the non-ASCII characters.
    A UTF-8 sequence missing one byte (cp1252 drops 0x81 0x8D 0x8F 0x90 0x9D, or writes
    '?'/U+FFFD for them) is completed with each possible lost byte; the CJK character
    that best fits its neighbours (jieba word frequencies) wins. Other damage is left
    to ftfy. The repaired code page is available via `repair_mojibake_detail`.
    """
    fixed, codepage = repair_mojibake_detail(text)
    return fixed, codepage is not None


def repair_mojibake_detail(text: str) -> tuple[str, str | None]:
    """Like `repair_mojibake` but returns the code page it repaired from (None if clean)."""
    hits, share = _mojibake_share(text)
    if hits < 2 or share < 0.5:
        return _ftfy_fallback(text)
    codepage, lost = _pick_codepage(text)
    result = _Repairer(text, codepage, lost).run()
    if codepage == "cp1252" and any("\x80" <= ch <= "\x9f" for ch in text):
        codepage = "latin-1"
    return result, codepage


def _pick_codepage(text: str) -> tuple[str, bytes]:
    """cp1252 or cp1254: their own letters decide; else cp1254 if no 'Ž'/'ž' in a long text.

    For UTF-8 CJK the two differ only in which continuation bytes are lost: cp1254 also
    loses 0x8E and 0x9E, which cp1252 shows as 'Ž' and 'ž' (expected in ~1 in 16 chars).
    """
    cp1252, cp1254 = _CODEPAGES
    if any("\x80" <= ch <= "\x9f" for ch in text):  # latin-1: nothing lost, any table works
        return cp1252
    if any(ch in "ĞİŞğış" for ch in text):
        return cp1254
    if any(ch in "Žž" for ch in text):
        return cp1252
    three_byte = len(re.findall("[\u00e3-\u00e9][\u0080-\u02ff\u2000-\u2122]{2}", text[:100_000]))
    return cp1254 if three_byte >= 100 else cp1252


def _ftfy_fallback(text: str) -> tuple[str, str | None]:
    """Let ftfy try other kinds of mojibake; only its encoding fix, never its width/quote changes."""
    if not any(ch >= "\x80" for ch in text[:100_000]):
        return text, None
    import ftfy

    fixed = ftfy.fix_encoding(text)
    return (fixed, "ftfy") if fixed != text else (text, None)
