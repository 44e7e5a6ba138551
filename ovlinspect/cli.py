"""The typer app: registers the commands (each in ovlinspect/commands/), nothing else. Nothing imports it.

Commands are built lazily: a run imports and converts only the command it invokes (typer turns every
registered function into a click command up front, which cost ~35 ms of start-up for nine commands
whose modules are otherwise unused). `--help` still lists them all.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from ovlinspect import __version__

_SETTINGS: dict[str, Any] = {
    "add_completion": False,
    "rich_markup_mode": None,
    "pretty_exceptions_enable": False,
}

# name -> (module under ovlinspect.commands, function, click command class attribute or None)
COMMANDS: dict[str, tuple[str, str, str | None]] = {
    "ls": ("ls", "ls", None),
    "du": ("du", "du", None),
    "btrfs": ("btrfs", "btrfs", None),
    "check": ("check", "check", "CheckCommand"),
    "orphans": ("orphans", "orphans", None),
    "why-missing": ("why_missing", "why_missing", None),
    "tree": ("tree", "tree", None),
    "diff": ("diff", "diff", None),
    "whiteouts": ("whiteouts", "whiteouts", None),
}


class LazyGroup(TyperGroup):
    """A root group whose subcommands are imported and built on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            modname, fn, cls_attr = COMMANDS[cmd_name]
            mod = importlib.import_module(f"ovlinspect.commands.{modname}")
            sub = typer.Typer(**_SETTINGS)
            kwargs = {"cls": getattr(mod, cls_attr)} if cls_attr else {}
            sub.command(cmd_name, **kwargs)(getattr(mod, fn))
            cmd = typer.main.get_command(sub)
            cmd.name = cmd_name
            self.commands[cmd_name] = cmd
        return self.commands.get(cmd_name)


app = typer.Typer(
    name="ovlinspect",
    help="Storage-driver diagnostics for overlayfs container hosts (read-only).",
    no_args_is_help=True,
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    **_SETTINGS,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ovlinspect {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Storage-driver diagnostics for overlayfs container hosts (read-only)."""


def main() -> None:
    """The console script. A short-lived process that builds large, acyclic structures (`ls` of
    1000 mounts makes ~100k objects): the cyclic GC runs rarely (and never over the imports), and
    once the output is flushed the process ends without freeing its objects one by one. Together
    ~15% of `ls --json` on 1000 mounts (scripts/bench_ls.py). A failed write of stdout outside a
    command (`--version > /dev/full`) or at the last flush is one line and an exit code too."""
    import gc
    import os
    import sys

    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    code: object = 0
    try:
        app(prog_name="ovlinspect")
    except SystemExit as exc:
        code = exc.code
    except OSError as exc:  # writing stdout outside a command (`--version`, `--help`)
        from ovlinspect.commands.common import output_failure_code

        code = output_failure_code(exc)
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:
        sys.stdout.flush()
    except OSError as exc:
        from ovlinspect.commands.common import output_failure_code

        code = code or output_failure_code(exc)
    except ValueError:  # stdout closed
        pass
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(code or 0)
