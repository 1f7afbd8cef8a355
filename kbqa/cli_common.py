"""What every `kbqa` sub-command shares: the consoles, the common options, loading settings,
turning kbqa's errors into a one-line message with exit code 2, and JSON output.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from kbqa.config import Settings, load_settings
from kbqa.errors import KbqaError

out = Console()
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file.", show_default=False)]
HomeOpt = Annotated[
    Path | None, typer.Option("--home", help="Folder holding knowledge/ and vector_store/ (env KBQA_HOME).")
]
KbOpt = Annotated[str | None, typer.Option("--kb", help="Knowledge base name (default: settings.default_kb).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def cli_settings(config: Path | None, home: Path | None) -> Settings:
    overrides: dict[str, Any] = {"home": home} if home else {}
    return load_settings(config, **overrides)


@contextmanager
def errors() -> Iterator[None]:
    try:
        yield
    except KbqaError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: everything committed so far is kept; rerun to finish.")
        raise typer.Exit(130) from None


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=1) + "\n")


STYLE = {"added": "green", "updated": "cyan", "unchanged": "dim", "removed": "magenta", "failed": "bold red"}
