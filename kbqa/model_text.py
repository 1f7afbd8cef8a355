"""Clean-up of what a model wrote, before its sentences are checked against the sources.

Marker normalisation (`【1】`, `[1, 2]`, `[source 1]` → `[1]`, markers moved before the full stop),
echoed prompt scaffolding, unfinished lead-ins, loops, and the "the sources do not say" reply.
Pure text functions, kept apart from the chain in `kbqa.qa` that calls them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from kbqa.citations import sentences
from kbqa.schema import Source

# [3], [1, 2], [1][2], 【1】, [source 2], [^2] — what models write; normalised to [n].
MARKER = re.compile(r"[\[【]\s*(?:\^|source\s*|来源\s*|文档\s*)?(\d{1,2}(?:\s*[,，、]\s*\d{1,2})*)\s*[\]】]", re.I)
# A reply that says the sources do not hold the answer.
DONT_KNOW = re.compile(
    r"(not (?:found|mentioned|provided|contained|available|covered) in|do(?:es)? not (?:contain|mention|provide|say)|"
    r"(?:no|not enough) information|cannot (?:find|answer)|can't (?:find|answer)|i don'?t know|"
    r"unable to (?:find|answer)|"
    r"没有(?:提到|提及|相关|找到|包含)|未(?:提到|提及|找到)|无法(?:回答|找到|确定)|不知道)",
    re.I,
)


def clean_markers(text: str, valid: set[int]) -> str:
    """Normalise every marker to `[n]` and drop those that point to no source."""

    def fix(m: re.Match[str]) -> str:
        nums = [int(x) for x in re.findall(r"\d+", m.group(1))]
        return "".join(f"[{n}]" for n in dict.fromkeys(nums) if n in valid)

    text = MARKER.sub(fix, text)
    # Qwen often puts the marker after the full stop ("两年。[1]", "clicks. [1]"): move it before,
    # where it stays with its sentence when the answer is split.
    text = re.sub(r"([。！？；])[ \t]*((?:\[\d+\])+)", r"\2\1", text)
    text = re.sub(r'(?<=[^\s.])([.!?;])[ \t]*((?:\[\d+\])+)(?=\s+[A-Z0-9"“(]|\s*$)', r" \2\1", text)
    return re.sub(r"[ \t]+([.,;。，；])", r"\1", re.sub(r"[ \t]{2,}", " ", text)).strip()


def looping(text: str) -> bool:
    """The model repeats itself: some line or sentence of ≥ 8 characters occurs 3+ times."""
    seen: dict[str, int] = {}
    for part in re.split(r"\n+|(?<=[.!?。！？])\s+", text):
        part = part.strip()
        if len(part) >= 8:
            seen[part] = seen.get(part, 0) + 1
            if seen[part] >= 3:
                return True
    return False


SCAFFOLD = re.compile(r"^\s*(?:the\s+)?(?:sources?|answer|question|context|资料|回答|问题)\s*[:：]?\s*$", re.I)


def drop_scaffolding(text: str, sources: Sequence[Source]) -> str:
    """Remove what small models echo from the prompt: label lines, source header lines,
    and repeated lines (kept once)."""
    headers = {f"[{s.n}] {s.file}" for s in sources}
    out: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if SCAFFOLD.match(stripped) or any(stripped.startswith(h) for h in headers):
            continue
        if stripped and stripped in (o.strip() for o in out):
            continue
        out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def drop_dangling(text: str) -> str:
    """Remove a trailing lead-in the model never finished ("… The answer is:")."""
    parts = sentences(text)
    if len(parts) > 1 and parts[-1].rstrip().endswith((":", "：")):
        cut = text.rfind(parts[-1])
        return text[:cut].rstrip() if cut > 0 else text
    return text


def norm_text(text: str) -> str:
    return "".join(text.lower().split()).rstrip(".。")
