"""`ovlinspect diff`: what the top layer changes against the layers below (like `docker diff`, and how)."""

from __future__ import annotations

import json
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
    open_stack,
    require_one_target,
)
from ovlinspect.errors import EXIT_INCOMPLETE, EXIT_OK


@boundary
def diff(
    target: Annotated[str, typer.Argument(metavar="[TARGET]", help="A mount point (or a path under it); omit with --lowerdir/--container/--image.")] = None,  # type: ignore[assignment]
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
    """List what the top layer (the upper dir, else the top lower) adds, changes and deletes.

    Beyond `docker diff`, each change says how: new, copy_up, metacopy (metadata-only copy-up),
    type_change, opaque_replacement (+ hidden_by_opaque for what it hides), renamed (redirect),
    dir, whiteout.

    Exit status: 0 listed; 3 listed, but some entries could not be read.
    """
    from ovlinspect.analysis.merged import Change, TreeError, diff_top

    require_one_target(target, lowerdir, container, image)
    stack, reader, ctx = open_stack(target, lowerdir, upperdir, options, container, image, mountinfo, proc_root, sys_root)
    errors = 0
    with reader:
        from ovlinspect.render.diff import change_record, render_change
        from ovlinspect.render.tree import error_record, stack_record

        if json_out:
            out = sys.stdout
            out.write('{"schema_version": 1, "stack": ' + json.dumps(stack_record(stack), ensure_ascii=False) + ', "changes": [')
            errs = []
            n = 0
            for c in diff_top(ctx):
                if isinstance(c, TreeError):
                    errs.append(error_record(c))
                    continue
                out.write(("," if n else "") + json.dumps(change_record(c), ensure_ascii=False))
                n += 1
            errors = len(errs)
            from ovlinspect.render.jsonout import problem_record

            out.write('], "errors": ' + json.dumps(errs, ensure_ascii=False) + ', "problems": '
                      + json.dumps([problem_record(p) for p in ctx.problems], ensure_ascii=False) + "}\n")
            out.flush()
        else:
            con = stdout_console()
            for c in diff_top(ctx):
                if isinstance(c, Change):
                    render_change(con, c)
                else:
                    errors += 1
                    from ovlinspect.render.safe import text

                    con.print(text(f"! /{'/'.join(c.path)}: {c.verdict} {c.errno_name or ''}", style="red"))
            warn_problems(ctx.problems)
    return EXIT_INCOMPLETE if errors or ctx.problems else EXIT_OK
