"""`ovlinspect ls`: every overlay mount, its layer chain, owner and health flags."""

from __future__ import annotations

from typing import Annotated

import typer

from ovlinspect.commands.common import (
    AllNsOpt,
    JsonOpt,
    MountinfoOpt,
    ProcRootOpt,
    SysRootOpt,
    boundary,
    host_roots,
    stdout_console,
    warn_problems,
    write_json,
)
from ovlinspect.errors import EXIT_INCOMPLETE, EXIT_OK


@boundary
def ls(
    long: Annotated[
        bool,
        typer.Option(
            "--layers", "-l", help="Show each mount's layers: position, role, path as written, resolved path, existence."
        ),
    ] = False,
    check_paths: Annotated[
        bool | None,
        typer.Option(
            "--check-paths/--no-check-paths",
            help="Check that layer dirs exist on this host (default: on, off when replaying --mountinfo).",
        ),
    ] = None,
    json_out: JsonOpt = False,
    all_namespaces: AllNsOpt = False,
    mountinfo: MountinfoOpt = None,
    proc_root: ProcRootOpt = "/proc",
    sys_root: SysRootOpt = "/sys",
) -> int:
    """List every overlay mount, decoded exactly as the kernel sees it.

    Exit status: 0 listed; 3 listed, but some mountinfo lines or namespaces could not be read.
    """
    from ovlinspect.inventory import collect_mounts

    roots = host_roots(mountinfo, proc_root, sys_root)
    inv = collect_mounts(roots, all_namespaces=all_namespaces, check_paths=check_paths)
    if json_out:
        from ovlinspect.render.ls import inventory_json

        write_json(inventory_json(inv))
    else:
        from ovlinspect.render.ls import render_inventory

        render_inventory(inv, stdout_console(), long=long, show_ns=all_namespaces)
        warn_problems(inv.problems)
    return EXIT_INCOMPLETE if inv.problems else EXIT_OK
