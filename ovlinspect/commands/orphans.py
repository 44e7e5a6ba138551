"""`ovlinspect orphans`: runtime layer dirs nothing references, with sizes, ages and a clean-up script."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ovlinspect.commands.common import JsonOpt, ProcRootOpt, boundary, print_json, stdout_console, warn_problems
from ovlinspect.errors import EXIT_INCOMPLETE, EXIT_NEGATIVE, EXIT_OK

DockerRootOpt = Annotated[Optional[list[str]], typer.Option("--docker-root", metavar="DIR", help="Docker data root (repeatable); default: discovered.")]
PodmanRootOpt = Annotated[Optional[list[str]], typer.Option("--podman-root", metavar="DIR", help="containers/storage graph root (repeatable); default: discovered.")]
ContainerdRootOpt = Annotated[Optional[list[str]], typer.Option("--containerd-root", metavar="DIR", help="containerd root (repeatable); default: discovered.")]


@boundary
def orphans(
    script: Annotated[bool, typer.Option("--script", help="Print a reviewable shell script that would remove the orphans (never the unknowns).")] = False,
    min_age: Annotated[
        Optional[float],
        typer.Option("--min-age", metavar="SECONDS", help="While a daemon runs, younger dirs are 'unknown' (may be in progress). Default 600."),
    ] = None,
    json_out: JsonOpt = False,
    docker_root: DockerRootOpt = None,
    podman_root: PodmanRootOpt = None,
    containerd_root: ContainerdRootOpt = None,
    proc_root: ProcRootOpt = "/proc",
) -> int:
    """Find layer dirs that no runtime record references (read-only: never deletes anything).

    Docker: not a layerdb cache-id, mount-id or init-id, not mounted, not below a referenced layer;
    dangling l/ links; `-removing` residue. podman: not in layers.json. containerd: snapshot dirs
    unknown to metadata.db, `new-*`/`rm-*` temp dirs. Anything not provably unreferenced is
    "unknown", never "orphan".

    Exit status: 0 no orphans; 1 orphans found; 3 some records could not be read.
    """
    from ovlinspect.hostfs import HostRoots
    from ovlinspect.runtimes import find_orphans
    from ovlinspect.runtimes.discovery import RootOverrides

    ov = RootOverrides(tuple(docker_root or ()), tuple(podman_root or ()), tuple(containerd_root or ()))
    roots = HostRoots(proc_root=proc_root, runtime_overrides=ov)
    report, problems = find_orphans(roots, min_age_seconds=min_age)
    if script:
        import sys

        from ovlinspect.analysis.orphans import cleanup_script

        sys.stdout.buffer.write(cleanup_script(report).encode("utf-8", "surrogateescape"))
        sys.stdout.flush()
    elif json_out:
        from ovlinspect.render.orphans import orphans_doc

        print_json(orphans_doc(report, problems))
    else:
        from ovlinspect.render.orphans import render_orphans

        render_orphans(report, stdout_console())
    if not json_out:
        warn_problems(problems)
    if report.orphans:
        return EXIT_NEGATIVE
    return EXIT_INCOMPLETE if problems else EXIT_OK
