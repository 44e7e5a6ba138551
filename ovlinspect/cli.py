"""The typer app: registers the commands (each in ovlinspect/commands/), nothing else. Nothing imports it."""

from __future__ import annotations

from typing import Annotated

import typer

from ovlinspect import __version__
from ovlinspect.commands import btrfs as _btrfs
from ovlinspect.commands import check as _check
from ovlinspect.commands import diff as _diff
from ovlinspect.commands import du as _du
from ovlinspect.commands import ls as _ls
from ovlinspect.commands import orphans as _orphans
from ovlinspect.commands import tree as _tree
from ovlinspect.commands import whiteouts as _whiteouts
from ovlinspect.commands import why_missing as _why_missing

app = typer.Typer(
    name="ovlinspect",
    help="Storage-driver diagnostics for overlayfs container hosts (read-only).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ovlinspect {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Storage-driver diagnostics for overlayfs container hosts (read-only)."""


app.command("ls")(_ls.ls)
app.command("du")(_du.du)
app.command("btrfs")(_btrfs.btrfs)
app.command("check", cls=_check.CheckCommand)(_check.check)
app.command("orphans")(_orphans.orphans)
app.command("why-missing")(_why_missing.why_missing)
app.command("tree")(_tree.tree)
app.command("diff")(_diff.diff)
app.command("whiteouts")(_whiteouts.whiteouts)


def main() -> None:
    app(prog_name="ovlinspect")
