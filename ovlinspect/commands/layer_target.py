"""Options and plumbing shared by the layer commands (why-missing, tree, diff, whiteouts). Light imports."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

LowerdirOpt = Annotated[
    Optional[str],
    typer.Option("--lowerdir", metavar="A:B:C", help="An explicit stack instead of a mount: lower dirs top first, written like the mount option ('::' before data-only layers; '\\:' and '\\,' escapes)."),
]
UpperdirOpt = Annotated[Optional[str], typer.Option("--upperdir", metavar="DIR", help="With --lowerdir: the upper dir.")]
OptionsOpt = Annotated[
    Optional[str],
    typer.Option("--options", metavar="OPTS", help="With --lowerdir: mount options (redirect_dir=on,metacopy=on,userxattr,...); the rest take the module defaults."),
]
ContainerOpt = Annotated[Optional[str], typer.Option("--container", metavar="NAME", help="The layers of a container (running or stopped), by name or id.")]
ImageOpt = Annotated[Optional[str], typer.Option("--image", metavar="REF", help="The layers of an image, by reference or id.")]


def open_stack(target: str | None, lowerdir: str | None, upperdir: str | None, options: str | None,
               container: str | None, image: str | None, mountinfo: str | None, proc_root: str, sys_root: str) -> tuple[Any, Any, Any]:
    """-> (LayerStack, LayerReader, LookupContext). The caller closes the reader."""
    from ovlinspect.analysis.lookup import LookupContext
    from ovlinspect.commands.common import host_roots
    from ovlinspect.layers import LayerReader
    from ovlinspect.targets import resolve_target

    roots = host_roots(mountinfo, proc_root, sys_root)
    stack = resolve_target(target, roots, lowerdir=lowerdir, upperdir=upperdir, options=options, container=container, image=image)
    reader = LayerReader([la.path for la in stack.layers], stack.xattr_prefix)
    return stack, reader, LookupContext(stack, reader)


def explicit_stack(lowerdir: str | None, container: str | None, image: str | None) -> bool:
    return lowerdir is not None or container is not None or image is not None


def require_one_target(target: str | None, lowerdir: str | None, container: str | None, image: str | None) -> None:
    """A TARGET or an explicit stack (--lowerdir/--container/--image): exactly one of them."""
    from ovlinspect.errors import UsageError

    if explicit_stack(lowerdir, container, image) and target is not None:
        raise UsageError("name a TARGET or --lowerdir/--container/--image, not both")
    if not explicit_stack(lowerdir, container, image) and target is None:
        raise UsageError("name a TARGET: a mount point or a path under it", hint="or use --lowerdir / --container / --image")


def check_layers_readable(stack: Any, reader: Any) -> list[Any]:
    """Open every layer root once: a missing or unreadable layer is a Problem, not a traceback."""
    from ovlinspect.layers import ReadProblem

    problems = []
    for i in range(len(stack.layers)):
        try:
            reader.dir_fd(i, ())
        except ReadProblem as rp:
            problems.append(rp.problem)
    return problems
