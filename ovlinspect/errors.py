"""Error hierarchy, exit codes and non-fatal Problems (pure; no I/O).

Every user-facing failure is an OvlinspectError: one line of message, an optional hint, and a
documented exit code. Non-fatal trouble (a vanished layer, an unreadable dir, a malformed
mountinfo line) is a Problem collected next to the results, never raised.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

# Exit codes, documented in README.md ("Exit codes"). `check` uses the monitoring convention
# (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN) instead.
EXIT_OK = 0
EXIT_NEGATIVE = 1  # the answer is "no": a path is not visible, a health flag is raised
EXIT_USAGE = 2  # bad arguments or bad input file
EXIT_INCOMPLETE = 3  # an answer was given, but some things could not be read (see problems)
EXIT_NOT_FOUND = 4  # the target (mount, path, container, filesystem) does not exist
EXIT_PERMISSION = 5  # not allowed to read what the answer needs (run as root)
EXIT_IO = 6  # an I/O error made the answer impossible
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_BROKEN_PIPE = 141  # stdout closed by the reader (e.g. `| head`); exits quietly


class OvlinspectError(Exception):
    """A failure the user must see: one line, a hint, an exit code."""

    exit_code = EXIT_IO

    def __init__(self, message: str, *, hint: str | None = None, path: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.path = path


class UsageError(OvlinspectError):
    exit_code = EXIT_USAGE


class InputError(OvlinspectError):
    """A file given to us (mountinfo, capture, config, metadata) cannot be parsed."""

    exit_code = EXIT_USAGE


class NotFoundError(OvlinspectError):
    exit_code = EXIT_NOT_FOUND


class PermissionDeniedError(OvlinspectError):
    exit_code = EXIT_PERMISSION


class HostIOError(OvlinspectError):
    exit_code = EXIT_IO


@dataclass(frozen=True)
class Problem:
    """Something that could not be read or made sense of; the rest of the answer stands."""

    kind: str  # stable id: "vanished", "permission", "io", "malformed", "unresolved", ...
    message: str
    path: str | None = None
    line: int | None = None


def problem_from_oserror(exc: OSError, path: str | None = None, what: str = "read") -> Problem:
    """Translate an OSError into a Problem (the one choke point for per-path errors)."""
    p = path if path is not None else (exc.filename if isinstance(exc.filename, str) else None)
    if exc.errno in (errno.ENOENT, errno.ESTALE):
        return Problem("vanished", f"cannot {what}: it no longer exists", p)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return Problem("permission", f"cannot {what}: permission denied", p)
    if exc.errno == errno.ELOOP:
        return Problem("symlink", f"cannot {what}: is a symlink (not followed)", p)
    return Problem("io", f"cannot {what}: {exc.strerror or exc}", p)


def error_from_oserror(exc: OSError, path: str, what: str = "read") -> OvlinspectError:
    """Translate an OSError that makes the whole answer impossible into an OvlinspectError."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return NotFoundError(f"cannot {what} {path}: no such file or directory", path=path)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionDeniedError(
            f"cannot {what} {path}: permission denied", hint="run as root", path=path
        )
    return HostIOError(f"cannot {what} {path}: {exc.strerror or exc}", path=path)
