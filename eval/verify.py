"""Check that every dev-set question is grounded in the fetched corpus.

For each answerable question: the gold file exists in the corpus folder, its
gold pages exist, and every ``must_contain`` string occurs on at least one gold
page (whole text for files without pages). Matching is case-insensitive after
NFKC normalisation (so PDF ligatures such as "ﬁ" match "fi") with runs of
whitespace collapsed; for Chinese questions or strings, whitespace is ignored
entirely because PDF extraction inserts spaces between CJK characters
unpredictably. Unanswerable questions must have no gold pages or strings.

Usage::

    python benchmarks/fetch_corpus.py en-manuals zh-docs   # once
    python eval/verify.py                                   # both sets
    python eval/verify.py --set eval/dev_en.jsonl --corpus benchmarks/data/en-manuals

Exit status 0 when every check passes, 1 otherwise, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import unicodedata
from collections import Counter
from functools import cache
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PAIRS = [
    (ROOT / "eval" / "dev_en.jsonl", ROOT / "benchmarks" / "data" / "en-manuals"),
    (ROOT / "eval" / "dev_zh.jsonl", ROOT / "benchmarks" / "data" / "zh-docs"),
]
KEYS = ("id", "question", "file", "pages", "answer", "must_contain", "unanswerable")
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


class _HTMLText(HTMLParser):
    """Visible text of an HTML page (script/style dropped), entities decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


@cache
def pages_of(path: Path) -> tuple[str, ...] | str:
    """Per-page text of a PDF (pypdf), or the whole text of a txt/html file."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        import pypdf

        logging.getLogger("pypdf").setLevel(logging.ERROR)
        return tuple(page.extract_text() or "" for page in pypdf.PdfReader(str(path)).pages)
    raw = path.read_bytes().decode("utf-8")
    if suffix in (".html", ".htm"):
        parser = _HTMLText()
        parser.feed(raw)
        return " ".join(parser.parts)
    return raw


def norm(text: str, drop_spaces: bool) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"\s+", "", text) if drop_spaces else re.sub(r"\s+", " ", text).strip()


def check_question(q: dict, corpus: Path) -> list[str]:
    """Return the problems with one question (empty when it passes)."""
    missing = [k for k in KEYS if k not in q]
    if missing:
        return [f"missing keys {missing}"]
    if not isinstance(q["unanswerable"], bool) or not q["question"].strip() or not q["answer"].strip():
        return ["unanswerable must be a bool; question and answer must be non-empty"]
    if q["unanswerable"]:
        return [] if not q["must_contain"] and not q["pages"] else ["unanswerable but has pages/must_contain"]
    problems = []
    if not (isinstance(q["must_contain"], list) and 1 <= len(q["must_contain"]) <= 3):
        problems.append("answerable questions need 1-3 must_contain strings")
    path = corpus / str(q["file"])
    if not q["file"] or not path.is_file():
        return [*problems, f"gold file {q['file']!r} not found in {corpus}"]
    content = pages_of(path)
    chinese = bool(CJK.search(q["question"]))
    if isinstance(content, tuple):
        pages = q["pages"]
        if not pages or not all(isinstance(p, int) and 1 <= p <= len(content) for p in pages):
            return [*problems, f"pages {pages} not valid 1-based pages of {q['file']} ({len(content)} pages)"]
        gold = [content[p - 1] for p in pages]
    else:
        if q["pages"] is not None:
            problems.append(f"{q['file']} has no pages; pages must be null")
        gold = [content]
    for needle in q["must_contain"]:
        drop = chinese or bool(CJK.search(needle))
        n = norm(needle, drop)
        if not n or not any(n in norm(text, drop) for text in gold):
            where = f"pages {q['pages']}" if isinstance(content, tuple) else "the file"
            problems.append(f"{needle!r} not found on {where} of {q['file']}")
    return problems


def verify_set(set_path: Path, corpus: Path) -> int:
    """Check one JSONL set against its corpus folder; print a summary; return failures."""
    questions = [json.loads(line) for line in set_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    failures = 0
    ids = Counter(q.get("id") for q in questions)
    for dup in [i for i, n in ids.items() if n > 1]:
        print(f"  FAIL {set_path.name}: duplicate id {dup!r}")
        failures += 1
    for q in questions:
        for problem in check_question(q, corpus):
            print(f"  FAIL {q.get('id')}: {problem}")
            failures += 1
    answerable = [q for q in questions if not q.get("unanswerable")]
    unans = len(questions) - len(answerable)
    # ids encode how a question was written: <lang>-p.. paraphrased, -d.. direct wording, -u.. unanswerable
    para = sum(1 for q in answerable if re.match(r"^[a-z]+-p\d", str(q.get("id"))))
    files = Counter(q["file"] for q in answerable)
    print(
        f"{set_path.relative_to(ROOT) if set_path.is_relative_to(ROOT) else set_path}: "
        f"{len(questions)} questions, {len(answerable)} answerable, "
        f"{unans} unanswerable ({unans / max(len(questions), 1):.0%}), "
        f"{para} paraphrased ({para / max(len(answerable), 1):.0%} of answerable), "
        f"{len(files)} gold files, {failures} failure(s)"
    )
    return failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Verify eval question sets against the fetched corpora.")
    ap.add_argument("--set", type=Path, help="a JSONL question set (with --corpus)")
    ap.add_argument("--corpus", type=Path, help="the corpus folder the set's `file` names refer to")
    args = ap.parse_args(argv)
    if bool(args.set) != bool(args.corpus):
        ap.error("--set and --corpus go together")
    pairs = [(args.set.resolve(), args.corpus.resolve())] if args.set else DEFAULT_PAIRS
    failures = 0
    for set_path, corpus in pairs:
        if not corpus.is_dir():
            print(
                f"FAIL: corpus folder {corpus} missing; fetch it first: "
                "python benchmarks/fetch_corpus.py en-manuals zh-docs",
                file=sys.stderr,
            )
            failures += 1
            continue
        failures += verify_set(set_path, corpus)
    print("OK: all questions grounded" if not failures else f"FAILED: {failures} problem(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
