"""How the `kbqa` commands print: the index report and its progress bar, sources, streamed answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from rich.markup import escape

from kbqa.cli_common import STYLE as _STYLE
from kbqa.cli_common import err, out
from kbqa.errors import KbqaError
from kbqa.schema import Answer, FileResult, IngestReport, Retrieved, Source

T = TypeVar("T")


def print_report(report: IngestReport) -> None:
    from rich.table import Table

    table = Table(title="Index report", show_lines=False)
    table.add_column("file", overflow="fold")
    table.add_column("status")
    table.add_column("chunks", justify="right")
    table.add_column("note", overflow="fold")
    for f in report.files:
        note = f.reason or "; ".join(f.warnings)
        table.add_row(f.file, f"[{_STYLE[f.status]}]{f.status}[/]", str(f.chunks or ""), note)
    out.print(table)
    counts = report.to_json()["counts"]
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    out.print(f"{summary or 'no files'} — {report.chunks_embedded} chunks embedded in {report.seconds:.1f}s")


def with_progress(fn: Callable[[Callable[[int, int, FileResult], None]], T], quiet: bool) -> T:
    if quiet:
        return fn(lambda *_: None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]indexing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}"), console=err, transient=True,
    ) as bar:
        task = bar.add_task("", total=None)

        def update(done: int, total: int, result: FileResult) -> None:
            bar.update(task, completed=done, total=total, description=result.file[-50:])

        return fn(update)


def print_sources(sources: list[Source]) -> None:
    if not sources:
        out.print("[yellow]No matching passages in the knowledge base.[/]")
        return
    for s in sources:
        where = f"{s.file}" + (f" p.{s.page}" if s.page else "") + (f" — {s.heading}" if s.heading else "")
        out.print(f"[bold][{s.n}][/] {where}  [dim](score {s.score:.2f})[/]", highlight=False)
        snippet = " ".join(s.text.split())
        out.print(f"    {snippet[:300]}{'…' if len(snippet) > 300 else ''}", highlight=False)


def print_answer_sources(answer: Answer) -> None:
    cited = set(answer.cited)
    for s in answer.sources:
        if cited and s.n not in cited:
            continue
        where = f"{s.file}" + (f" p.{s.page}" if s.page else "") + (f" — {s.heading}" if s.heading else "")
        snippet = " ".join(s.text.split())
        out.print(f"  [bold][{s.n}][/] {where} — [dim]\"{snippet[:160]}{'…' if len(snippet) > 160 else ''}\" "
                  f"(score {s.score:.2f})[/]", highlight=False)


def print_footer(answer: Answer, stats: bool) -> None:
    by = {"generative": answer.model, "extractive": "extractive (source sentences)", "refused": "refused"}[answer.mode]
    line = f"answered by {by}" + (f" — {answer.note}" if answer.note else "")
    if stats:
        t = answer.timings_ms
        decode_s = (t.get("generate", 0.0) - t.get("first_token", 0.0)) / 1000
        rate = f", {answer.tokens / decode_s:.1f} tokens/s" if answer.tokens > 1 and decode_s > 0 else ""
        first = f", first token {t['first_token']:.0f} ms" if "first_token" in t else ""
        line += (f"\nretrieve {t.get('retrieve', 0):.0f} ms, generate {t.get('generate', 0):.0f} ms{first}, "
                 f"total {t.get('total', 0):.0f} ms{rate}")
    err.print(f"[dim]{line}[/]", highlight=False)


def stream_answer(pieces: Iterator[str | Retrieved | Answer], show_stream: bool) -> Answer:
    """Print pieces as they come; if the final text differs (fallback), print that instead.

    The sources the model reads are named on stderr before its first token."""
    streamed: list[str] = []
    for item in pieces:
        if isinstance(item, Retrieved):
            if show_stream:
                where = "  ".join(f"[{s.n}] {s.file}" + (f" p.{s.page}" if s.page else "") for s in item.sources)
                err.print(f"[dim]reading {escape(where)}[/]", highlight=False)
            continue
        if isinstance(item, Answer):
            if show_stream:
                if "".join(streamed).strip() != item.text.strip():
                    if streamed:
                        out.print()
                        label = "with citations" if item.mode == "generative" else f"{item.mode} answer"
                        out.print(f"[dim]── {label} ──[/]")
                    out.print(item.text, highlight=False, markup=False)
                else:
                    out.print()
            return item
        streamed.append(item)
        if show_stream:
            out.print(item, end="", highlight=False, markup=False)
    raise KbqaError("the answer chain ended without an answer")
