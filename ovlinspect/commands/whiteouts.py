"""`ovlinspect whiteouts`: every overlay marker per layer, and what an expert would flag about them."""

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
from ovlinspect.errors import EXIT_INCOMPLETE, EXIT_NEGATIVE, EXIT_OK


@boundary
def whiteouts(
    target: Annotated[str, typer.Argument(metavar="[TARGET]", help="A mount point (or a path under it); omit with --lowerdir/--container/--image.")] = None,  # type: ignore[assignment]
    lowerdir: LowerdirOpt = None,
    upperdir: UpperdirOpt = None,
    options: OptionsOpt = None,
    container: ContainerOpt = None,
    image: ImageOpt = None,
    findings_only: Annotated[bool, typer.Option("--findings", help="Only the lint findings, not every marker.")] = False,
    json_out: JsonOpt = False,
    mountinfo: MountinfoOpt = None,
    proc_root: ProcRootOpt = "/proc",
    sys_root: SysRootOpt = "/sys",
) -> int:
    """List every whiteout, opaque, redirect and metacopy marker of every layer, with lint findings.

    Exit status: 0 no warning or critical finding; 1 some; 3 some layer dirs could not be read, or
    trusted.* xattrs are unreadable (not root): xattr markers are then unknown.
    """
    from ovlinspect.analysis.whiteouts import Finding, Marker, scan_markers
    from ovlinspect.model import Severity

    require_one_target(target, lowerdir, container, image)
    stack, reader, ctx = open_stack(target, lowerdir, upperdir, options, container, image, mountinfo, proc_root, sys_root)
    problems = []
    bad = 0
    from ovlinspect.render.jsonout import problem_record
    from ovlinspect.render.tree import stack_record
    from ovlinspect.render.whiteouts import finding_record, marker_record, render_finding, render_marker

    unknown = not reader.xattrs_visible
    with reader:
        if json_out:
            out = sys.stdout
            out.write('{"schema_version": 1, "stack": ' + json.dumps(stack_record(stack), ensure_ascii=False)
                      + f', "xattrs_readable": {json.dumps(not unknown)}, "markers": [')
            findings = []
            n = 0
            for it in scan_markers(ctx):
                if isinstance(it, Marker):
                    out.write(("," if n else "") + json.dumps(marker_record(it), ensure_ascii=False))
                    n += 1
                elif isinstance(it, Finding):
                    findings.append(finding_record(it))
                    bad += it.severity is not Severity.INFO
                else:
                    problems.append(it)
            out.write('], "findings": ' + json.dumps(findings, ensure_ascii=False) + ', "problems": '
                      + json.dumps([problem_record(p) for p in problems], ensure_ascii=False) + "}\n")
            out.flush()
        else:
            con = stdout_console()
            from ovlinspect.render.safe import text

            con.print(text(stack.label, style="bold"))
            if unknown:
                con.print("note: trusted.* xattrs are unreadable without CAP_SYS_ADMIN: only char 0/0 whiteouts and .wh. files are shown; run as root", markup=False, style="yellow")
            n = 0
            for it in scan_markers(ctx):
                if isinstance(it, Marker):
                    n += 1
                    if not findings_only:
                        render_marker(con, stack, it)
                elif isinstance(it, Finding):
                    bad += it.severity is not Severity.INFO
                    if findings_only:
                        render_marker(con, stack, Marker(it.layer, it.path, it.id))
                    render_finding(con, it)
                else:
                    problems.append(it)
            con.print(f"{n} markers, {bad} warning/critical findings", markup=False, style="dim")
            warn_problems(problems)
    if problems or unknown:
        return EXIT_INCOMPLETE
    return EXIT_NEGATIVE if bad else EXIT_OK
