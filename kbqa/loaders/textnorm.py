"""Pure text clean-up shared by the loaders: line rejoining and control-character removal.

PDF text layers and OCR give one line per *visual* line. Chinese has no spaces between
words, so turning every line break into a space (what most extractors do) scatters
spaces through Chinese sentences and breaks keyword search; keeping the breaks splits
English words. `rejoin_lines` undoes the visual wrapping with script-aware rules.
"""

from __future__ import annotations

import re

_CJK_RANGES: tuple[tuple[int, int], ...] = (
    (0x2E80, 0x2FDF),  # radicals
    (0x3000, 0x303F),  # CJK symbols and punctuation (、。「」…)
    (0x3040, 0x30FF),  # kana
    (0x3100, 0x312F),  # bopomofo
    (0x3190, 0x31FF),
    (0x3400, 0x4DBF),  # extension A
    (0x4E00, 0x9FFF),  # unified ideographs
    (0xAC00, 0xD7AF),  # hangul syllables
    (0xF900, 0xFAFF),  # compatibility ideographs
    (0xFE30, 0xFE4F),  # compatibility forms (vertical punctuation)
    (0xFF00, 0xFFEF),  # full-width forms (，：；！？（）)
    (0x20000, 0x3134F),  # extensions B–G
)

# Dashes and quotes that sit between CJK text in Chinese typesetting.
_CJK_ADJACENT_PUNCT = frozenset("—…“”‘’·")

_SENTENCE_END = frozenset(".!?:;")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\ufffe\uffff]")
_BLANK_SPLIT_RE = re.compile(r"\n[ \t\u3000]*\n(?:[ \t\u3000]*\n)*")


_CJK_RE = re.compile("[" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _CJK_RANGES) + "]")


def is_cjk(char: str) -> bool:
    """True for CJK ideographs, kana, hangul, and CJK / full-width punctuation."""
    return _CJK_RE.match(char) is not None


def _cjkish(char: str) -> bool:
    return is_cjk(char) or char in _CJK_ADJACENT_PUNCT


def count_cjk(text: str) -> int:
    """Number of CJK characters in `text` (ideographs, kana, hangul, CJK punctuation)."""
    return len(_CJK_RE.findall(text))


def non_space_len(text: str) -> int:
    """Characters that are not whitespace: the measure of "how much text a page has"."""
    return sum(map(len, text.split()))  # str.split() splits on Unicode whitespace, in C


def normalize_newlines(text: str) -> str:
    """CRLF / CR / form feed / Unicode line separators → "\\n"."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\f", "\n\n").replace("\u2028", "\n").replace("\u2029", "\n\n")


def strip_control(text: str) -> str:
    """Drop C0/C1 control characters (except tab and newline), BOMs and non-characters."""
    return _CONTROL_RE.sub("", text)


def _join(prev: str, nxt: str) -> str:
    """The separator to put between two visual lines of one paragraph."""
    if not prev or not nxt:
        return ""
    last, first = prev[-1], nxt[0]
    if _cjkish(last) or _cjkish(first):
        return ""
    if last in _SENTENCE_END:
        # Likely the end of a sentence, list item or code line: keep the structure.
        return "\n"
    return " "


def _hyphen_split(joined: str, line: str) -> bool:
    """ "hyphen-" + "ation": a Latin letter and hyphen end the text, a lowercase letter follows."""
    return (
        len(joined) > 1 and joined[-1] == "-" and joined[-2].isascii() and joined[-2].isalpha() and line[0].islower()
    )


def display_width(text: str) -> int:
    """Columns a line takes: CJK characters count two, others one."""
    return len(text) + count_cjk(text)


def _short_line_limit(lines: list[str]) -> int:
    """Lines narrower than this end a paragraph or are a heading (PDF/OCR text has no blank lines)."""
    widths = sorted(display_width(ln) for ln in lines if ln)
    if len(widths) < 3:
        return 0
    typical = widths[int(0.8 * (len(widths) - 1))]
    return int(0.6 * typical) if typical >= 30 else 0


def rejoin_lines(text: str, keep_short_lines: bool = False) -> str:
    """Undo visual line wrapping in extracted text, keeping paragraph breaks.

    - a break between two CJK characters (or CJK and CJK punctuation) is removed;
    - "hyphen-\nation" (letter, hyphen, break, lowercase letter) becomes "hyphenation";
    - a break between Latin words becomes a space; after sentence-final punctuation
      (". ! ? : ;") it is kept, so lists and code lines stay on their own lines;
    - blank lines (paragraph breaks) are kept as one blank line;
    - with `keep_short_lines` (PDF and OCR text, where paragraphs are not separated by
      blank lines), a break after a line much shorter than the page's typical line is
      kept: that line is a heading or the last line of a paragraph.
    """
    text = normalize_newlines(text)
    paragraphs = _BLANK_SPLIT_RE.split(text)
    all_lines = [ln.strip(" \t\u3000") for para in paragraphs for ln in para.split("\n")]
    short = _short_line_limit(all_lines) if keep_short_lines else 0
    out: list[str] = []
    for para in paragraphs:
        lines = [ln.strip(" \t\u3000") for ln in para.split("\n")]
        joined = ""
        previous = ""
        for line in lines:
            if not line:
                continue
            if not joined:
                joined = line
            elif _hyphen_split(joined, line):
                joined = joined[:-1] + line
            elif short and display_width(previous) < short:
                joined = joined + "\n" + line
            else:
                joined = joined + _join(joined, line) + line
            previous = line
        if joined:
            out.append(joined)
    return "\n\n".join(out)


def clean_pdf_text(text: str) -> str:
    """pdfium text → clean paragraphs: newlines normalised, soft hyphens joined, lines rejoined.

    pdfium marks a hyphen it removed at a line end with U+FFFE (or U+0002); the word
    halves either side belong together.
    """
    text = normalize_newlines(text)
    text = re.sub(r"[\ufffe\x02]\n?", "", text)
    return rejoin_lines(strip_control(text), keep_short_lines=True)
