"""`ovlinspect check`: every health check, for cron and monitoring (exit 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN)."""

from __future__ import annotations

import enum
import sys
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand

from ovlinspect.commands.common import MountinfoOpt, ProcRootOpt, SysRootOpt, boundary, host_roots, is_output_error, print_json
from ovlinspect.errors import HostIOError, OvlinspectError

EXIT_UNKNOWN = 3


class CheckCommand(TyperCommand):
    """Bad arguments are UNKNOWN (3) for `check`, not 2 (which a monitoring system reads as CRITICAL)."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except Exception as exc:  # typer's (vendored) click UsageError and subclasses carry exit_code 2
            if getattr(exc, "exit_code", None) == 2:
                exc.exit_code = EXIT_UNKNOWN  # type: ignore[attr-defined]
            raise


class Format(enum.StrEnum):
    text = "text"
    json = "json"
    nagios = "nagios"
    prometheus = "prometheus"


@boundary
def check(
    fmt: Annotated[Format, typer.Option("--format", "-f", help="text (silent when OK), json, nagios (plugin output), prometheus (exposition format).")] = Format.text,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Text: show every check, OK ones too.")] = False,
    textfile: Annotated[
        Optional[str],
        typer.Option("--textfile", metavar="PATH", help="Also write the Prometheus exposition to PATH atomically (node_exporter textfile collector; name it *.prom)."),
    ] = None,
    config: Annotated[Optional[str], typer.Option("--config", metavar="FILE", help="Settings file (default /etc/ovlinspect/config.toml when it exists).")] = None,
    set_: Annotated[list[str], typer.Option("--set", metavar="CHECK.SETTING=VALUE", help="Override a threshold, e.g. fs_free_inodes.warning_percent=20 (repeatable).")] = [],  # noqa: B006
    disable: Annotated[list[str], typer.Option("--disable", metavar="CHECK", help="Turn a check off (repeatable).")] = [],  # noqa: B006
    enable: Annotated[list[str], typer.Option("--enable", metavar="CHECK", help="Turn a check on (repeatable).")] = [],  # noqa: B006
    only: Annotated[list[str], typer.Option("--only", metavar="CHECK", help="Run only these checks (repeatable).")] = [],  # noqa: B006
    data_root: Annotated[list[str], typer.Option("--data-root", metavar="DIR", help="Runtime data roots (repeatable; replaces the defaults).")] = [],  # noqa: B006
    path: Annotated[list[str], typer.Option("--path", metavar="DIR", help="Also watch the filesystem holding DIR (repeatable).")] = [],  # noqa: B006
    timeout: Annotated[Optional[float], typer.Option("--timeout", metavar="SECONDS", help="Deadline of each gathering step (default 10); a hung filesystem turns into UNKNOWN.")] = None,
    lock: Annotated[Optional[str], typer.Option("--lock", metavar="PATH", help="Lock file (default /run/ovlinspect/check.lock); an overlapping run exits 3.")] = None,
    list_checks: Annotated[bool, typer.Option("--list", help="List the checks, their thresholds and switches, and exit.")] = False,
    mountinfo: MountinfoOpt = None,
    proc_root: ProcRootOpt = "/proc",
    sys_root: SysRootOpt = "/sys",
) -> int:
    """Run every health check; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (a check could not run).

    Silent when everything is OK (cron mails only on trouble); one line per finding otherwise:
    what is wrong, where, and what to do. Every error of `check` itself exits 3.
    """
    try:
        code = _check(fmt, verbose, textfile, config, set_, disable, enable, only, data_root, path, timeout, lock,
                      list_checks, mountinfo, proc_root, sys_root)
        sys.stdout.flush()  # a full disk under the output is an error of check itself (3), below
        return code
    except OvlinspectError as exc:
        exc.exit_code = EXIT_UNKNOWN  # the monitoring convention: "could not check"
        raise
    except OSError as exc:
        if not is_output_error(exc):
            raise
        err = HostIOError(f"cannot write the output: {exc}")
        err.exit_code = EXIT_UNKNOWN
        raise err from None


def _check(fmt: Format, verbose: bool, textfile: str | None, config: str | None, sets: list[str], disable: list[str],
           enable: list[str], only: list[str], data_root: list[str], path: list[str], timeout: float | None,
           lock: str | None, list_checks: bool, mountinfo: str | None, proc_root: str, sys_root: str) -> int:
    from ovlinspect.analysis.checks import CHECKS, CHECKS_BY_ID
    from ovlinspect.checks_run import check_lock, run_check, write_textfile
    from ovlinspect.config import ConfigError, apply_flags, read_config

    cfg = apply_flags(read_config(config), sets, disable, enable, timeout, lock, data_root, path)
    for cid in only:
        if cid not in CHECKS_BY_ID:
            raise ConfigError(f"--only {cid}: unknown check id (known: {', '.join(CHECKS_BY_ID)})")
    if list_checks:
        for c in CHECKS:
            s = cfg.checks[c.id]
            th = ", ".join(f"{k}={int(v) if float(v).is_integer() else v}" for k, v in s.params.items()) or "no thresholds"
            sys.stdout.write(f"{c.id:<22} {'on ' if s.enabled else 'off'} {c.title} ({th})\n")
        return 0
    roots = host_roots(mountinfo, proc_root, sys_root)
    with check_lock(cfg.lock_file):
        report = run_check(roots, cfg, tuple(only))
        if textfile:
            from ovlinspect.render.prometheus import render_prometheus

            write_textfile(textfile, render_prometheus(report))
    if fmt is Format.json:
        from ovlinspect.render.checks import report_doc

        print_json(report_doc(report))
    elif fmt is Format.nagios:
        from ovlinspect.render.nagios import render_nagios

        sys.stdout.write(render_nagios(report))
    elif fmt is Format.prometheus:
        if not textfile:
            from ovlinspect.render.prometheus import render_prometheus

            sys.stdout.write(render_prometheus(report))
    else:
        from ovlinspect.render.checks import text_lines

        lines = text_lines(report, verbose)
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    return int(report.status)
