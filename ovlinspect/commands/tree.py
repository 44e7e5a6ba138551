"""`ovlinspect tree`: the merged view reconstructed offline from the layers, with the providing layer."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ovlinspect.commands.common import (
    JsonOpt,
    MountinfoOpt,
    ProcRootOpt,
    SysRootOpt,
    boundary,
    stdout_console,
    warn_problems,
)
from ovlinspect.commands.layer_target import (
    ContainerOpt,
    ImageOpt,
    LowerdirOpt,
    OptionsOpt,
    UpperdirOpt,
    explicit_stack,
    open_stack,
)
from ovlinspect.errors import EXIT_INCOMPLETE, EXIT_OK, NotFoundError, UsageError


@boundary
def tree(
    args: Annotated[list[str], typer.Argument(metavar="[TARGET] [SUBPATH]", help="A mount point (or a path under it) and optionally a directory inside the merged view. Without TARGET (with --lowerdir/--container/--image) the argument is the SUBPATH.")] = None,  # type: ignore[assignment]
    lowerdir: LowerdirOpt = None,
    upperdir: UpperdirOpt = None,
    options: OptionsOpt = None,
    container: ContainerOpt = None,
    image: ImageOpt = None,
    json_out: JsonOpt = False,
    mountinfo: MountinfoOpt = None,
    proc_root: ProcRootOpt = "/proc",
    sys_root: SysRootOpt = "/sys",
) -> int:
    """Show the merged view as the kernel would, computed from the layer dirs without mounting.

    Each entry: type, size, mode, symlink target and the layer that provides it (metacopy files:
    also the layer holding the data). Streams: memory grows with the directories on the current
    path, not with the tree.

    Exit status: 0 shown; 3 shown, but some directories could not be read or the kernel would
    fail some lookups (EIO/EPERM, listed under errors).
    """
    from ovlinspect.analysis.lookup import resolve_dir, split_path
    from ovlinspect.analysis.merged import walk_merged

    args = list(args or [])
    target = None
    if not explicit_stack(lowerdir, container, image):
        if not args:
            raise UsageError("name a TARGET: a mount point or a path under it", hint="or use --lowerdir / --container / --image")
        target = args.pop(0)
    if len(args) > 1:
        raise UsageError("at most one SUBPATH")
    stack, reader, ctx = open_stack(target, lowerdir, upperdir, options, container, image, mountinfo, proc_root, sys_root)
    with reader:
        sub = args[0] if args else stack.subpath
        comps = split_path(sub)
        start, failed = resolve_dir(ctx, comps)
        if start is None:
            why = failed.error if failed is not None and failed.error else "not a visible directory"
            raise NotFoundError(f"/{'/'.join(comps)} is not a directory of the merged view ({why})",
                                hint="ask `ovlinspect why-missing` why")
        label = "/" + "/".join(comps)
        items = walk_merged(ctx, start)
        if json_out:
            from ovlinspect.render.tree import stream_tree_json

            _, errs = stream_tree_json(sys.stdout, stack, items, ctx.problems)
            sys.stdout.flush()
        else:
            from ovlinspect.render.tree import render_tree

            _, errs = render_tree(stdout_console(), stack, label, items)
            warn_problems(ctx.problems)
    return EXIT_INCOMPLETE if errs or ctx.problems else EXIT_OK
