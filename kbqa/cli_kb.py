"""`kbqa kb list | create | delete | info`: managing knowledge bases, registered in `kbqa/cli.py`.

`kbqa.kb` is imported by each command, so loading the CLI for another command does not pay for it."""

from __future__ import annotations

from typing import Annotated

import typer

from kbqa.cli_common import STYLE, ConfigOpt, HomeOpt, JsonOpt, cli_settings, errors, out, print_json

kb_app = typer.Typer(help="Manage knowledge bases.", no_args_is_help=True)


@kb_app.command("list")
def kb_list(as_json: JsonOpt = False, config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """List knowledge bases.  Example: kbqa kb list"""
    from kbqa.kb import KnowledgeBase

    with errors():
        names = KnowledgeBase.list_names(cli_settings(config, home))
    if as_json:
        print_json({"knowledge_bases": names})
    else:
        for name in names:
            out.print(name)


@kb_app.command("create")
def kb_create(name: str, config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Create an empty knowledge base.  Example: kbqa kb create manuals"""
    from kbqa.kb import KnowledgeBase

    with errors(), KnowledgeBase.create(name, cli_settings(config, home)) as base:
        out.print(f"created {name}: put files in {base.knowledge_dir} and run `kbqa index --kb {name}`")


@kb_app.command("delete")
def kb_delete(
    name: str,
    keep_files: Annotated[bool, typer.Option("--keep-files", help="Delete only the index.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Delete a knowledge base (its index, and its copied files unless --keep-files).

    Example: kbqa kb delete manuals --yes
    """
    from kbqa.kb import KnowledgeBase

    if not yes:
        typer.confirm(f"Delete knowledge base {name!r}?", abort=True)
    with errors():
        KnowledgeBase.delete(name, cli_settings(config, home), keep_files=keep_files)
    out.print(f"deleted {name}")


@kb_app.command("info")
def kb_info(name: Annotated[str | None, typer.Argument()] = None, as_json: JsonOpt = False,
            config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Show a knowledge base's files, chunk counts, embedding model and size.

    Example: kbqa kb info manuals
    """
    from kbqa.kb import KnowledgeBase

    with errors():
        settings = cli_settings(config, home)
        with KnowledgeBase.open(name or settings.default_kb, settings) as base:
            stats, files = base.stats(), base.files()
    if as_json:
        print_json({**stats, "file_list": files})
        return
    emb = stats["embedding"]
    out.print(f"[bold]{stats['name']}[/]: {stats['files']} files ({stats['failed_files']} failed), "
              f"{stats['chunks']} chunks, {stats['index_bytes'] / 1e6:.1f} MB; "
              f"embedding {emb['model_id']} ({emb['dimension']}-d); vectors in {stats['vectors']}")
    for f in files:
        note = f" — {f['reason']}" if f["reason"] else ""
        out.print(f"  {f['file']}  [{STYLE.get('failed' if f['status'] == 'failed' else 'added')}]"
                  f"{f['status']}[/] {f['chunks']} chunks{note}", highlight=False)
