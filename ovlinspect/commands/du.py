"""`ovlinspect du`: exact disk usage per target, or per layer (`--per-layer`), by GNU du's rules."""

from __future__ import annotations

import sys
from typing import Annotated, Any, Optional

import typer

from ovlinspect.commands.common import (
    JsonOpt,
    MountinfoOpt,
    ProcRootOpt,
    SysRootOpt,
    boundary,
    host_roots,
    print_json,
    stderr_console,
    stdout_console,
    warn_problems,
)
from ovlinspect.errors import EXIT_INCOMPLETE, EXIT_OK, Problem, UsageError


@boundary
def du(
    targets: Annotated[Optional[list[str]], typer.Argument(metavar="[TARGET]...", help="Mount points or paths under overlay mounts.")] = None,
    per_layer: Annotated[bool, typer.Option("--per-layer", "-l", help="One row per layer (top first) instead of one total per target.")] = False,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Every layer of every overlay mount, plus the runtimes' layer dirs.")] = False,
    lowerdir: Annotated[Optional[str], typer.Option("--lowerdir", help="An explicit stack, written like the mount option (A:B::D).")] = None,
    upperdir: Annotated[Optional[str], typer.Option("--upperdir", help="With --lowerdir: the upper dir.")] = None,
    options: Annotated[Optional[str], typer.Option("--options", help="With --lowerdir: other mount options (userxattr, metacopy=on...).")] = None,
    container: Annotated[Optional[str], typer.Option("--container", help="A container (name or id) of Docker, podman or containerd.")] = None,
    image: Annotated[Optional[str], typer.Option("--image", help="An image (reference or id).")] = None,
    top: Annotated[int, typer.Option("--top", metavar="N", min=0, help="Also list the N largest files of each layer.")] = 0,
    hidden: Annotated[
        Optional[bool],
        typer.Option("--hidden/--no-hidden", help="Hidden bytes and copy-ups per layer (default: on with --per-layer, off with --all)."),
    ] = None,
    compare_content: Annotated[
        bool, typer.Option("--compare-content", help="Read copied-up files and their lower copies to find identical content (reads data).")
    ] = False,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, help="Worker processes (default: CPUs, at most 8).")] = None,
    exact: Annotated[bool, typer.Option("--bytes", "-b", help="Exact byte counts instead of KiB/MiB/GiB in text output.")] = False,
    json_out: JsonOpt = False,
    mountinfo: MountinfoOpt = None,
    proc_root: ProcRootOpt = "/proc",
    sys_root: SysRootOpt = "/sys",
) -> int:
    """Disk usage of overlay layers: apparent and allocated bytes, files, whiteouts, shared vs unique.

    Exit status: 0 measured; 3 measured, but something could not be read (see the problems).
    """
    from ovlinspect import walk
    from ovlinspect.analysis.usage import DuReport

    roots = host_roots(mountinfo, proc_root, sys_root)
    if not (targets or lowerdir or container or image or all_):
        raise UsageError("name a target: a mount point, --lowerdir, --container, --image, or --all")
    if (upperdir or options) and not lowerdir:
        raise UsageError("--upperdir/--options go with --lowerdir")
    shadows = per_layer and not all_ if hidden is None else hidden
    stacks, problems = _stacks(roots, targets or [], lowerdir, upperdir, options, container, image, all_, shadows)
    if not stacks and not all_:
        raise UsageError("nothing to measure")
    mps = _live_mountpoints(roots, problems)
    progress, done = _progress(json_out)
    try:
        report: DuReport = walk.collect_usage(
            stacks, mountpoints=mps, top_n=top, compare_content=compare_content, workers=jobs, progress=progress, problems=problems
        )
    finally:
        done()
    if json_out:
        from ovlinspect.render.du import du_doc

        print_json(du_doc(report))
    else:
        from ovlinspect.render.du import render_du

        render_du(report, stdout_console(), per_layer, exact)
        warn_problems(list(report.problems))
    return EXIT_INCOMPLETE if report.problems or not report.totals.complete else EXIT_OK


def _stacks(
    roots: Any, targets: list[str], lowerdir: str | None, upperdir: str | None, options: str | None,
    container: str | None, image: str | None, all_: bool, shadows: bool,
) -> tuple[list[Any], list[Problem]]:
    from ovlinspect.model import LayerRole
    from ovlinspect.targets import resolve_target, stack_from_mount
    from ovlinspect.walk import StackInput, stack_input

    out = []
    problems: list[Problem] = []
    for t in targets:
        out.append(stack_input(resolve_target(t, roots), shadows))
    if lowerdir is not None:
        out.append(stack_input(resolve_target(None, roots, lowerdir=lowerdir, upperdir=upperdir, options=options), shadows))
    if container is not None:
        out.append(stack_input(resolve_target(None, roots, container=container), shadows))
    if image is not None:
        out.append(stack_input(resolve_target(None, roots, image=image), shadows))
    if all_:
        from ovlinspect.errors import OvlinspectError
        from ovlinspect.inventory import collect_mounts

        inv = collect_mounts(roots)
        problems.extend(inv.problems)
        entries = next(iter(inv.all_entries.values()), [])
        for m in inv.mounts:
            try:
                out.append(stack_input(stack_from_mount(m, "", entries), shadows))
            except OvlinspectError as exc:
                problems.append(Problem("skipped", exc.message, m.entry.mountpoint))
        if not roots.replay:
            # the runtimes' own layer dirs (stopped containers, unused images): grouped by owner
            from ovlinspect import runtimes

            all_dirs = getattr(runtimes, "all_layer_dirs", None)
            if all_dirs is not None:
                try:
                    dirs = all_dirs(roots)
                except OvlinspectError as exc:
                    problems.append(Problem("runtime", exc.message))
                    dirs = []
                except Exception as exc:  # a runtime's odd records must not break du --all
                    problems.append(Problem("runtime", f"runtime layer dirs: {type(exc).__name__}: {exc}"))
                    dirs = []
                groups: dict[str, list[str]] = {}
                for path, owner in dirs:
                    groups.setdefault(owner, []).append(path)
                for owner, paths in groups.items():
                    out.append(StackInput(owner, tuple((p, LayerRole.LOWER, i) for i, p in enumerate(paths))))
    return out, problems


def _live_mountpoints(roots: Any, problems: list[Problem]) -> list[str]:
    """Mount points of the namespace we walk in (never the replayed file: we walk this host)."""
    from ovlinspect.hostfs import HostRoots, read_mountinfo
    from ovlinspect.walk import mount_points

    try:
        return mount_points(read_mountinfo(HostRoots(proc_root=roots.proc_root)))
    except Exception as exc:
        problems.append(Problem("mountinfo", f"cannot read this host's mount points; mounts inside layers are only skipped by device: {exc}"))
        return []


def _progress(json_out: bool) -> tuple[Any, Any]:
    """A rich progress line on stderr for long walks, only when stderr is a TTY and not --json."""
    if json_out or not sys.stderr.isatty():
        return None, lambda: None
    import time

    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    t0 = time.monotonic()
    bar: list[Any] = []  # [Progress, task id] once shown

    def update(entries: int, done: int, total: int) -> None:
        now = time.monotonic()
        if not bar:
            if now - t0 < 0.5:  # short walks stay silent
                return
            prog = Progress(TextColumn("{task.description}"), TimeElapsedColumn(), console=stderr_console(), transient=True)
            prog.start()
            bar.extend((prog, prog.add_task("")))
        rate = entries / max(now - t0, 1e-6)
        bar[0].update(bar[1], description=f"du: {entries:,} entries ({rate:,.0f}/s), layers {done}/{total}")

    def done() -> None:
        if bar:
            bar[0].stop()

    return update, done
