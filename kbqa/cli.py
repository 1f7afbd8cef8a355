"""The `kbqa` command line. Thin: parses, calls `KnowledgeBase`, prints.

Library errors (`KbqaError`) become a one-line message and exit code 2; a file that
failed to index makes `kbqa index` exit 1 after the full report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kbqa.cli_common import ConfigOpt, HomeOpt, JsonOpt, KbOpt, err, out
from kbqa.cli_common import cli_settings as _settings
from kbqa.cli_common import errors as _errors
from kbqa.cli_common import print_json as _print_json
from kbqa.cli_kb import kb_app
from kbqa.cli_models import models_app
from kbqa.cli_output import (
    print_answer_sources,
    print_footer,
    print_report,
    print_sources,
    stream_answer,
    with_progress,
)
from kbqa.errors import KbqaError
from kbqa.schema import Answer
from kbqa.warm import WarmServer, source_from_json

# Modules that load models, numpy or LangChain are imported inside the commands that need them:
# `kbqa search` answered by a running `kbqa serve` (kbqa/warm.py) imports none of them.

app = typer.Typer(
    help="kbqa: index a folder of documents, search it and ask questions with cited answers (Chinese and English).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(kb_app, name="kb")
app.add_typer(models_app, name="models")

LocalOpt = Annotated[bool, typer.Option("--local", help="Run in this process even when `kbqa serve` is running.")]


@app.command()
def index(
    path: Annotated[Path | None, typer.Argument(help="File or folder to add; omit to re-index the KB folder.")] = None,
    kb: KbOpt = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Discard the index and build it again.")] = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Index documents into a knowledge base (incremental: only new or changed files are embedded).

    Files are copied into knowledge/<kb>/; re-running on the same folder mirrors it.

    Example: kbqa index ~/manuals --kb manuals
    """
    from kbqa.kb import KnowledgeBase

    with _errors():
        if path is not None and not path.expanduser().exists():
            raise KbqaError(f"{path}: no such file or folder")
        settings = _settings(config, home)
        with KnowledgeBase.create(kb or settings.default_kb, settings, exist_ok=True) as base:
            if rebuild:
                report = with_progress(base.rebuild, as_json)
                if path is not None:
                    report = with_progress(lambda p: base.add(path, p), as_json)
            elif path is not None:
                report = with_progress(lambda p: base.add(path, p), as_json)
            else:
                report = with_progress(base.sync, as_json)
    if as_json:
        _print_json(report.to_json())
    else:
        print_report(report)
    if report.failed:
        raise typer.Exit(1)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for, in any language.")],
    kb: KbOpt = None,
    k: Annotated[int | None, typer.Option("-k", help="How many sources.")] = None,
    min_score: Annotated[float | None, typer.Option("--min-score", help="Drop sources below this 0–1 score.")] = None,
    as_json: JsonOpt = False,
    local: LocalOpt = False,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Retrieve the most relevant passages (no LLM), with file, page and a 0–1 score.

    When `kbqa serve` runs with the same settings, the search runs there (its models are loaded).

    Example: kbqa search "how do I shrink Helvetica next to Times" --kb manuals --json
    """
    with _errors():
        settings = _settings(config, home)
        name = kb or settings.default_kb
        server = None if local else WarmServer.find(settings)
        data = server.search(name, query, k, min_score) if server is not None else None
        if data is None or not data["sources"]:  # an empty result is worth the local run: it explains why
            from kbqa.kb import KnowledgeBase

            with KnowledgeBase.open(name, settings) as base:
                data = {"sources": [s.to_json() for s in base.search(query, k=k, min_score=min_score)]}
                if base.store.count() == 0:
                    err.print(f"[yellow]knowledge base {base.name!r} has nothing indexed yet[/]: "
                              f"run `kbqa index --kb {base.name}` (or `kbqa index PATH --kb {base.name}`)")
    if as_json:
        _print_json(data)
    else:
        print_sources([source_from_json(s) for s in data["sources"]])


StatsOpt = Annotated[bool, typer.Option("--stats", help="Print timings and tokens/s.")]
KOpt = Annotated[int | None, typer.Option("-k", help="How many sources to give the model.")]
ThresholdOpt = Annotated[
    float | None, typer.Option("--min-score", help="Refusal threshold (0–1); default answer.min_score.")
]


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question, in Chinese or English.")],
    kb: KbOpt = None,
    k: KOpt = None,
    min_score: ThresholdOpt = None,
    as_json: JsonOpt = False,
    explain: Annotated[bool, typer.Option("--explain", help="With --json: add mode, model, cited, note.")] = False,
    stats: StatsOpt = False,
    local: LocalOpt = False,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Answer a question from the knowledge base, citing sources as [n] (or say it is not there).

    When `kbqa serve` runs with the same settings, the question is answered there (models loaded).

    Example: kbqa ask "What rule commands does booktabs provide?" --kb manuals
    """
    with _errors():
        settings = _settings(config, home)
        name = kb or settings.default_kb
        server = None if local else WarmServer.find(settings)
        timeout = settings.llm.timeout_s + 60.0
        data: dict[str, Any] | None = None
        answer: Answer | None = None
        if server is not None and server.count(name):
            if as_json:
                data = server.ask(name, question, k, min_score, explain, timeout)
            elif (served := server.ask_stream(name, question, k, min_score, timeout)) is not None:
                answer = stream_answer(served, True)
        if data is None and answer is None:
            from kbqa.kb import KnowledgeBase

            with KnowledgeBase.open(name, settings) as base:
                if base.store.count() == 0:
                    raise KbqaError(f"knowledge base {base.name!r} has nothing indexed yet: "
                                    f"run `kbqa index PATH --kb {base.name}`")
                if as_json:
                    data = base.ask(question, k=k, min_score=min_score).to_json(extended=explain)
                else:
                    answer = stream_answer(base.ask_stream(question, k=k, min_score=min_score), True)
    if data is not None:
        _print_json(data)
        return
    assert answer is not None
    print_answer_sources(answer)
    print_footer(answer, stats)


@app.command()
def chat(
    kb: KbOpt = None,
    k: KOpt = None,
    min_score: ThresholdOpt = None,
    stats: StatsOpt = False,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Talk to a knowledge base: multi-turn, answers stream as they are generated.

    Follow-ups ("and the second one?") are understood from the conversation.
    Commands: /clear forgets the conversation, /quit (or Ctrl-D) leaves.

    Example: kbqa chat --kb manuals
    """
    from kbqa.kb import KnowledgeBase

    with _errors():
        settings = _settings(config, home)
        with KnowledgeBase.open(kb or settings.default_kb, settings) as base:
            llm = base.llm
            err.print(f"[bold]kbqa chat[/] — knowledge base [cyan]{base.name}[/] "
                      f"({base.store.count()} chunks), model {llm.name if llm else 'extractive'}. "
                      "/clear, /quit", highlight=False)
            history: list[dict[str, str]] = []
            while True:
                try:
                    question = input("\n> ").strip()
                except EOFError:
                    break
                if not question:
                    continue
                if question in ("/quit", "/exit", "/q"):
                    break
                if question == "/clear":
                    history.clear()
                    err.print("[dim]conversation cleared[/]")
                    continue
                answer = stream_answer(base.ask_stream(question, history, k=k, min_score=min_score), True)
                print_answer_sources(answer)
                print_footer(answer, stats)
                history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer.text}]


@app.command()
def ui(
    host: Annotated[str | None, typer.Option("--host", help="Address to bind (default ui.host, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default ui.port, 8501).")] = None,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Open the browser app (Streamlit). A non-loopback --host needs ui.password (env KBQA_UI__PASSWORD).

    Example: kbqa ui --port 8501
    """
    from kbqa.ui_launch import launch

    with _errors():
        code = launch(host, port, config, home)
    raise typer.Exit(code)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option("--host", help="Address to bind (default api.host, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default api.port, 8000).")] = None,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Serve the REST API: knowledge bases, files, indexing jobs, search, ask (JSON or SSE) and an
    OpenAI-compatible /v1/chat/completions (model = knowledge base). Schema at http://HOST:PORT/openapi.json.

    A non-loopback --host needs api.token (env KBQA_API__TOKEN); clients send 'Authorization: Bearer <token>'.

    Example: kbqa serve --port 8000
    """
    from kbqa.serve import serve as run_server

    with _errors():
        code = run_server(host, port, config, home)
    raise typer.Exit(code)


@app.command()
def remove(
    file: Annotated[str, typer.Argument(help="File name inside the knowledge base (as `kbqa kb info` lists).")],
    kb: KbOpt = None,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Remove a file from a knowledge base: its copy and all its chunks.

    Example: kbqa remove old-manual.pdf --kb manuals
    """
    from kbqa.kb import KnowledgeBase

    with _errors():
        settings = _settings(config, home)
        with KnowledgeBase.open(kb or settings.default_kb, settings) as base:
            result = base.remove(file)
    out.print(f"removed {result.file} ({result.chunks} chunks)")


@app.command("eval")
def eval_cmd(
    questions: Annotated[Path, typer.Argument(help="Question set, JSON lines (see DESIGN.md / eval/README.md).")],
    kb: KbOpt = None,
    k: Annotated[int | None, typer.Option("-k", help="Sources per answer (default answer.max_sources).")] = None,
    no_answers: Annotated[bool, typer.Option("--no-answers", help="Retrieval figures only (no LLM).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="A row per question.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Save a PNG chart of the figures here.")] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Measure retrieval (hit@1/3/5/10, MRR) and answers (accuracy, refusals, citation precision, latency).

    Example: kbqa eval eval/dev_en.jsonl --kb en-manuals --verbose --plot eval-en.png
    """
    from kbqa.eval import evaluate_answers, evaluate_retrieval, load_questions, plot_report
    from kbqa.kb import KnowledgeBase

    with _errors():
        qs = load_questions(questions)
        settings = _settings(config, home)
        with KnowledgeBase.open(kb or settings.default_kb, settings) as base:
            if base.store.count() == 0:
                raise KbqaError(f"knowledge base {base.name!r} has nothing indexed yet")
            retrieval = evaluate_retrieval(qs, base.search)
            answers = None if no_answers else evaluate_answers(qs, lambda q: base.ask(q, k=k))
            data: dict[str, Any] = {"knowledge_base": base.name, "questions": len(qs), "file": str(questions),
                                    "retrieval": retrieval.to_json()}
            if answers is not None:
                data["answers"] = answers.to_json()
                data["model"] = base.llm.name if base.llm else "extractive"
            if plot is not None:
                data["plot"] = str(plot_report(data, plot, f"{questions.name} on {base.name}"))
        if verbose and answers is not None:
            data["per_question"] = answers.rows
    if as_json:
        _print_json(data)
        return
    r = data["retrieval"]
    out.print(f"[bold]{questions.name}[/] on [cyan]{data['knowledge_base']}[/]: {len(qs)} questions", highlight=False)
    out.print(f"retrieval ({r['questions']} answerable): hit@1 {r['hit@1']:.3f}  hit@3 {r['hit@3']:.3f}  "
              f"hit@5 {r['hit@5']:.3f}  hit@10 {r['hit@10']:.3f}  MRR {r['mrr']:.3f}  "
              f"search p50 {r['search_p50_ms']:.0f} ms / p95 {r['search_p95_ms']:.0f} ms", highlight=False)
    if answers is not None:
        a = data["answers"]
        out.print(f"answers ({data['model']}): accuracy {a['answer_accuracy']:.3f}  refusal accuracy "
                  f"{a['refusal_accuracy']:.3f}  false refusals {a['false_refusal_rate']:.3f}  citation precision "
                  f"{a['citation_precision']:.3f}  ask p50 {a['ask_p50_ms']:.0f} ms / p95 {a['ask_p95_ms']:.0f} ms  "
                  f"modes {a['modes']}", highlight=False)
    if verbose and answers is not None:
        from rich.table import Table

        table = Table(show_lines=False)
        for col in ("id", "ok", "mode", "cited", "answer"):
            table.add_column(col, overflow="fold")
        for row in answers.rows:
            table.add_row(row["id"], "[green]✓[/]" if row["ok"] else "[red]✗[/]", row["mode"],
                          ", ".join(row["cited"]), " ".join(row["answer"].split())[:160])
        out.print(table)
    if plot is not None:
        out.print(f"chart saved to {data['plot']}")


@app.command()
def migrate(
    to: Annotated[str, typer.Option("--to", help="Target: faiss, milvus-lite[://PATH.db], or http://HOST:19530.",
                                    show_default=False)],
    kb: KbOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Move a knowledge base's vectors to another store, without re-embedding anything.

    Vectors are copied from the KB's catalog; the KB switches once the copy is complete.
    An interrupted migration leaves the KB working on its old store.
    Milvus Lite paths are relative to the KB's index folder unless absolute (milvus:///abs/kb.db).
    A Milvus server's token comes from store.token or env MILVUS_TOKEN.

    Example: kbqa migrate --kb manuals --to milvus-lite
    Example: kbqa migrate --kb manuals --to http://127.0.0.1:19530
    Example: kbqa migrate --kb manuals --to faiss
    """
    from kbqa.kb import KnowledgeBase

    with _errors():
        settings = _settings(config, home)
        with KnowledgeBase.open(kb or settings.default_kb, settings) as base:
            before = base.store.location.uri
            after = base.migrate(to)
            data = {"knowledge_base": base.name, "from": before, "to": after, "vectors": base.store.count()}
    if as_json:
        _print_json(data)
    elif before == after:
        out.print(f"{data['knowledge_base']} already uses {after}")
    else:
        out.print(f"{data['knowledge_base']}: {data['vectors']} vectors moved from {before} to {after}",
                  highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
