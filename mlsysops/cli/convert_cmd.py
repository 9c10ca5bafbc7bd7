"""`mlsysops convert FILE`: rewrite a description written for the original framework (wrapped
`MLSysOpsApp:` or root-field objects) into the canonical Kubernetes form, comments kept where the rewrite
is only a change of layout (`mlsysops.agents.descriptions.convert`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def convert(
    file: Annotated[Path, typer.Argument(help="Description file (any of the three forms).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    in_place: Annotated[bool, typer.Option("--in-place", "-i", help="Rewrite FILE itself.")] = False,
) -> None:
    """Rewrite FILE into the canonical form (apiVersion/kind/metadata/spec); exit 1 if it is invalid."""
    from mlsysops.agents.descriptions import DescriptionError
    from mlsysops.agents.descriptions.convert import convert_text, joined

    try:
        text = file.read_text(encoding="utf-8")
        converted = convert_text(text, str(file))
    except OSError as exc:
        typer.echo(f"error: {file}: cannot read: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    except DescriptionError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(1) from None
    for c in converted:
        how = "comments kept" if c.comments_kept else "rewritten from the model (comments dropped)"
        typer.echo(f"{c.kind}/{c.name}: {c.form} form -> kubernetes form, {how}", err=True)
        for change in c.changes:
            typer.echo(f"  {change}", err=True)
    out = joined(converted)
    target = file if in_place else output
    if target is None:
        typer.echo(out, nl=False)
    else:
        target.write_text(out, encoding="utf-8")


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)
