"""Shared CLI plumbing: option bundles, consoles, the error boundary. Imports stay light."""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, Optional, TypeVar

import typer

from ovlinspect.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_IO,
    OvlinspectError,
)

EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug; the message says how to get the traceback

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON (schema_version 1) on stdout.")]
MountinfoOpt = Annotated[
    Optional[str],
    typer.Option(
        "--mountinfo", metavar="FILE", help="Replay a captured mountinfo file ('-' = stdin) instead of /proc/self/mountinfo."
    ),
]
ProcRootOpt = Annotated[str, typer.Option("--proc-root", metavar="DIR", help="Read /proc from DIR.")]
SysRootOpt = Annotated[str, typer.Option("--sys-root", metavar="DIR", help="Read /sys from DIR (module defaults, btrfs).")]
AllNsOpt = Annotated[
    bool,
    typer.Option(
        "--all-namespaces", "-A", help="Also read every other mount namespace (one mountinfo per distinct /proc/<pid>/ns/mnt)."
    ),
]

F = TypeVar("F", bound=Callable[..., Any])


def host_roots(mountinfo: str | None, proc_root: str, sys_root: str) -> Any:
    from ovlinspect.hostfs import HostRoots

    return HostRoots(proc_root=proc_root, sys_root=sys_root, mountinfo_file=mountinfo)


def stdout_console() -> Any:
    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(highlight=False, soft_wrap=False, width=None if tty else 400, emoji=False)


def stderr_console() -> Any:
    from rich.console import Console

    tty = sys.stderr.isatty()
    return Console(stderr=True, highlight=False, width=None if tty else 400, emoji=False)


def print_json(doc: dict[str, Any]) -> None:
    from ovlinspect.render.jsonout import dumps

    write_json(dumps(doc))


def write_json(serialised: str) -> None:
    """Write a JSON document and a newline to stdout, as UTF-8.

    Straight to the file descriptor: CPython's buffered writer, handed megabytes for a pipe whose
    reader exits (`| head -c 100`), returns after the first partial write and drops the rest
    without an error (seen on 3.11), so the closed pipe would go unnoticed and the exit status be
    0. os.write reports it (BrokenPipeError -> exit 141, see `boundary`)."""
    data = (serialised + "\n").encode("utf-8", "replace")
    out = sys.stdout
    out.flush()
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (CliRunner, io.StringIO)
        out.write(data.decode("utf-8"))
        out.flush()
        return
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def warn_problems(problems: list[Any], limit: int = 20) -> None:
    """Print non-fatal problems on stderr, escaped, at most `limit` of them."""
    if not problems:
        return
    from ovlinspect.render.safe import text

    err = stderr_console()
    for p in problems[:limit]:
        where = f" ({p.path})" if p.path else ""
        err.print(text(f"warning: {p.message}{where}"))
    if len(problems) > limit:
        err.print(text(f"warning: … and {len(problems) - limit} more problems (see --json)"))


def _error_line(message: str, hint: str | None = None) -> None:
    from ovlinspect.render.safe import escape_untrusted

    line = f"error: {escape_untrusted(message)}"
    if hint:
        line += f" (hint: {escape_untrusted(hint)})"
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


# errors of writing stdout: a full disk or quota, a file too big (reading never fails like this;
# check's textfile has its own handling)
_OUTPUT_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EFBIG))


def is_output_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _OUTPUT_ERRNOS


def output_failure_code(exc: OSError) -> int:
    """The exit code for a failed write of stdout: 141 quietly when the reader left, 6 with one
    line for a full disk or quota. Anything else is not an output failure: re-raised."""
    if isinstance(exc, BrokenPipeError):
        return EXIT_BROKEN_PIPE
    if not is_output_error(exc):
        raise exc
    _error_line(f"cannot write the output: {exc}")
    return EXIT_IO


def boundary(fn: F) -> F:
    """Translate everything a command raises into one stderr line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            code = fn(*args, **kwargs)
            sys.stdout.flush()  # a failed write of buffered output is this command's error too
        except typer.Exit:
            raise
        except OvlinspectError as exc:
            _error_line(exc.message, exc.hint)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _error_line("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # the reader went away (`| head`): stop quietly; keep Python from complaining at exit
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except OSError:
                pass
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except RecursionError:
            _error_line("internal error: recursion too deep", "please report this as a bug")
            raise typer.Exit(EXIT_INTERNAL) from None
        except Exception as exc:  # a bug: still one line, unless asked for the traceback
            if isinstance(exc, OSError) and is_output_error(exc):
                raise typer.Exit(output_failure_code(exc)) from None
            if os.environ.get("OVLINSPECT_DEBUG"):
                raise
            _error_line(
                f"internal error: {type(exc).__name__}: {exc}",
                "this is a bug; rerun with OVLINSPECT_DEBUG=1 for the traceback and report it",
            )
            raise typer.Exit(EXIT_INTERNAL) from None
        raise typer.Exit(code or 0)

    return wrapper  # type: ignore[return-value]
