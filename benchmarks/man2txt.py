"""Render man(7) roff source to plain text, deterministically (no groff).

Used by ``fetch_corpus.py`` for the ``man2txt`` transform. The output is
pinned by sha256 in ``corpora.yaml``, so any change here that alters a single
byte of the rendering breaks those pins: change it only together with them.

Usage as a filter::

    zcat grep.1.gz | python benchmarks/man2txt.py > grep.1.txt
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

_CHARS = {
    "em": "—",
    "en": "–",
    "bu": "•",
    "lq": "“",
    "rq": "”",
    "oq": "‘",
    "cq": "’",
    "aq": "'",
    "dq": '"',
    "co": "©",
    "hy": "-",
    "mi": "-",
    "rs": "\\",
    "ti": "~",
    "ha": "^",
    "Aq": "'",
}
_Repl = str | Callable[[re.Match[str]], str]
_INLINE: list[tuple[re.Pattern[str], _Repl]] = [
    (re.compile(r"\\\".*$"), ""),  # trailing comment
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\s[+-]?\d"), ""),  # size changes
    (re.compile(r"\\m(\[[^\]]*\]|\(..|.)"), ""),  # colour changes
    (re.compile(r"\\[wn]('[^']*'|\(..|\[[^\]]*\]|.)"), ""),  # widths, registers
    (re.compile(r"\\\*(\(..|\[[^\]]*\]|.)"), lambda m: _CHARS.get(m.group(1).strip("([]"), "")),
    (re.compile(r"\\\((..)"), lambda m: _CHARS.get(m.group(1), "")),
    (re.compile(r"\\\[([^\]]*)\]"), lambda m: _CHARS.get(m.group(1), "")),
    (re.compile(r"\\[-]"), "-"),
    (re.compile(r"\\ "), " "),
    (re.compile(r"\\e"), "\x00"),  # literal backslash, restored last
    (re.compile(r"\\[&^|%c:udt{}0/,]|\\\$\d"), ""),
]
_SKIP = {
    "nf",
    "fi",
    "RS",
    "RE",
    "in",
    "ll",
    "nr",
    "nh",
    "hy",
    "ad",
    "na",
    "PD",
    "it",
    "if",
    "ie",
    "el",
    "ds",
    "so",
    "ne",
    "ft",
    "ps",
    "vs",
    "ta",
    "UC",
    "DT",
    "TS",
    "TE",
    "T",
    "hw",
    "ns",
    "rs",
    "ti",
    "ce",
    "bp",
    "ig",
    "rm",
    "mk",
    "rt",
    "ev",
    "tm",
    "cs",
    "bd",
    "ss",
    "ul",
    "cu",
    "lf",
    "tr",
    "pc",
    "fam",
    "HP",
    "ME",
    "UE",
    "MT",
    "UR",
    "OP",
}


def _inline(text: str) -> str:
    for pat, repl in _INLINE:
        text = pat.sub(repl, text)
    return text.replace("\x00", "\\")


def _args(rest: str) -> list[str]:
    out, cur, quoted, started, escaped = [], "", False, False, False
    for ch in rest:
        if escaped or ch == "\\":
            cur, started, escaped = cur + ch, True, not escaped and ch == "\\"
        elif ch == '"':
            quoted, started = not quoted, True
        elif ch in " \t" and not quoted:
            if started:
                out.append(cur)
            cur, started = "", False
        else:
            cur, started = cur + ch, True
    if started:
        out.append(cur)
    return out


def man_to_text(source: str) -> str:
    """Render man(7) roff source to plain text, deterministically (no groff).

    Paragraphs are filled into one line each; headings get their own line.
    Good enough for retrieval: the words are the man page's, markup is gone.
    """
    lines: list[str] = []
    para: list[str] = []
    fill, in_macro, in_table_fmt = True, False, False

    def flush(blank: bool = True) -> None:
        if para:
            lines.append(" ".join(p for p in para if p).strip())
            para.clear()
        if blank and lines and lines[-1] != "":
            lines.append("")

    for raw in source.splitlines():
        if in_macro:
            in_macro = raw.strip() != ".."
            continue
        if in_table_fmt:
            in_table_fmt = not raw.rstrip().endswith(".")
            continue
        if raw.startswith(('.\\"', "'\\\"", '\\"')) or raw.strip() in (".", "'"):
            continue
        if raw.startswith((".", "'")):
            req, _, rest = raw[1:].strip().partition(" ")
            args = [_inline(a) for a in _args(rest)]
            if req in ("de", "de1", "am"):
                in_macro = True
            elif req == "TS":
                flush()
                in_table_fmt = True
            elif req == "TH":
                lines.append(f"{args[0]}({args[1]})" if len(args) > 1 else " ".join(args))
                lines.append("")
            elif req in ("SH", "SS"):
                flush()
                lines.append(("" if req == "SH" else "  ") + " ".join(args))
            elif req in ("B", "I", "SM", "SB"):
                para.append(" ".join(args))
            elif req in ("BR", "RB", "IR", "RI", "BI", "IB"):
                para.append("".join(args))
            elif req in ("PP", "P", "LP", "sp", "TP"):
                flush()
            elif req == "IP":
                flush()
                if args and args[0]:
                    para.append(args[0])
            elif req == "br":
                flush(blank=False)
            elif req == "nf":
                flush()
                fill = False
            elif req == "fi":
                fill = True
            elif req in _SKIP or len(req) <= 3:
                continue
            continue
        text = _inline(raw.replace("\t", "  ")).replace("T{", "").replace("T}", "")
        if fill:
            para.append(text.strip())
        else:
            para.append(text.rstrip())
            flush(blank=False)
    flush()
    return "\n".join(lines).strip() + "\n"


if __name__ == "__main__":
    sys.stdout.buffer.write(man_to_text(sys.stdin.buffer.read().decode("utf-8")).encode("utf-8"))
