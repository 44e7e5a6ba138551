"""`ovlinspect btrfs`: will this btrfs run out of metadata space (ENOSPC while df shows free)?"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ovlinspect.commands.common import (
    JsonOpt,
    MountinfoOpt,
    ProcRootOpt,
    SysRootOpt,
    boundary,
    host_roots,
    print_json,
    stdout_console,
    warn_problems,
)
from ovlinspect.errors import EXIT_INCOMPLETE, EXIT_NEGATIVE, EXIT_OK


@boundary
def btrfs(
    paths: Annotated[Optional[list[str]], typer.Argument(metavar="[PATH]...", help="Inspect the btrfs holding each PATH (default: those backing container data roots).", show_default=False)] = None,
    all_fs: Annotated[bool, typer.Option("--all", "-a", help="Inspect every mounted btrfs filesystem.")] = False,
    capture: Annotated[Optional[str], typer.Option("--capture", metavar="DIR", help="Also write what was read to DIR/<FSID>/{sysfs/,sysfs.json,statvfs.json} for a bug report or --replay.")] = None,
    replay: Annotated[Optional[str], typer.Option("--replay", metavar="DIR", help="Report from a capture (DIR/<FSID> or a folder of them) instead of this host.")] = None,
    data_root: Annotated[Optional[list[str]], typer.Option("--data-root", metavar="DIR", help="Container data root to look for (repeatable; default /var/lib/docker, /var/lib/containers/storage, /var/lib/containerd and overlay upper dirs).")] = None,
    json_out: JsonOpt = False,
    mountinfo: MountinfoOpt = None,
    proc_root: ProcRootOpt = "/proc",
    sys_root: SysRootOpt = "/sys",
) -> int:
    """Metadata exhaustion check for btrfs: metadata and global reserve, unallocated space, whether a
    new metadata chunk fits, a verdict OK / WARNING / CRITICAL with its reason and the remedy order.

    Reads /sys/fs/btrfs/<FSID>/ and statvfs only (no root, no btrfs-progs needed).

    Exit status: 0 all OK (or no btrfs found); 1 a WARNING or CRITICAL verdict; 3 a verdict is
    UNKNOWN or something could not be read; 4 a PATH does not exist or is not on btrfs.
    """
    from ovlinspect.analysis.btrfs import worst_verdict
    from ovlinspect.btrfs_sysfs import inspect_btrfs

    roots = host_roots(mountinfo, proc_root, sys_root)
    reports, problems = inspect_btrfs(roots, paths or None, all_fs, replay, data_roots=data_root or None, capture=capture)
    none_found = [p for p in problems if p.kind == "none"]
    real_problems = [p for p in problems if p.kind != "none"]
    if json_out:
        from ovlinspect.render.btrfs import btrfs_doc

        print_json(btrfs_doc(reports, problems))
    else:
        from ovlinspect.render.btrfs import render_reports
        from ovlinspect.render.safe import text

        out = stdout_console()
        for p in none_found:
            out.print(text(p.message))
        render_reports(reports, out)
        warn_problems(real_problems)
    worst = worst_verdict(reports)
    if worst == "unknown" or (real_problems and not reports):
        return EXIT_INCOMPLETE
    if worst in ("warning", "critical"):
        return EXIT_NEGATIVE
    return EXIT_OK
