"""`ovlinspect why-missing`: is a path visible in the merged view, and why (not), layer by layer."""

from __future__ import annotations

from typing import Annotated

import typer

from ovlinspect.commands.common import (
    JsonOpt,
    MountinfoOpt,
    ProcRootOpt,
    SysRootOpt,
    boundary,
    print_json,
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
from ovlinspect.errors import EXIT_INCOMPLETE, EXIT_NEGATIVE, EXIT_OK, UsageError


@boundary
def why_missing(
    args: Annotated[list[str], typer.Argument(metavar="[TARGET] PATH...", help="A mount point (or a path under it), then paths inside the merged view. Without TARGET (with --lowerdir/--container/--image) every argument is a PATH.")] = None,  # type: ignore[assignment]
    lowerdir: LowerdirOpt = None,
    upperdir: UpperdirOpt = None,
    options: OptionsOpt = None,
    container: ContainerOpt = None,
    image: ImageOpt = None,
    brief: Annotated[bool, typer.Option("--brief", "-b", help="Only the verdict and the reason, no per-layer steps.")] = False,
    json_out: JsonOpt = False,
    mountinfo: MountinfoOpt = None,
    proc_root: ProcRootOpt = "/proc",
    sys_root: SysRootOpt = "/sys",
) -> int:
    """Explain whether each PATH is visible in the merged view, and why not.

    Verdicts: visible, whiteout, opaque_parent, shadowed_by_non_directory, not_a_directory_parent,
    redirected_away, covered_by_mount, not_found, metacopy_data_missing, metacopy_not_enabled,
    redirect_not_followed, invalid_redirect, symlink_loop, unknown (see README).

    Exit status: 0 every path visible; 1 some path is not; 3 some answer is unknown or incomplete.
    """
    from ovlinspect.analysis.lookup import explain_path

    args = list(args or [])
    target = None
    if not explicit_stack(lowerdir, container, image):
        if not args:
            raise UsageError("name a TARGET (a mount point or a path under it) and PATHs", hint="or use --lowerdir / --container / --image")
        target = args.pop(0)
    stack, reader, ctx = open_stack(target, lowerdir, upperdir, options, container, image, mountinfo, proc_root, sys_root)
    with reader:
        paths = args or (["/" + stack.subpath] if stack.subpath else [])
        if not paths:
            raise UsageError("name at least one PATH inside the merged view")
        base = "/" + stack.subpath if stack.subpath else "/"
        exs = []
        for p in paths:
            full = p if p.startswith("/") else base.rstrip("/") + "/" + p
            exs.append(explain_path(stack, reader, full, ctx=ctx))
    if json_out:
        from ovlinspect.render.why import why_doc

        print_json(why_doc(stack, exs))
    else:
        from ovlinspect.render.why import render_why

        render_why(stdout_console(), stack, exs, verbose=not brief)
        warn_problems([p for ex in exs for p in ex.problems])
    if any(ex.verdict == "unknown" or ex.problems for ex in exs):
        return EXIT_INCOMPLETE
    return EXIT_OK if all(ex.visible for ex in exs) else EXIT_NEGATIVE
