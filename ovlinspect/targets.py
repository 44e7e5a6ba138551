"""Turn what the user named (a mount point, a path under one, an explicit stack, a container or
an image) into a LayerStack. I/O: reads mountinfo through hostfs/inventory; resolves nothing
inside layers (a path under a merged view is split off as `subpath`, never realpath'd on the host,
because the container controls the symlinks in there).
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import stat

from ovlinspect.analysis.mounts import effective_options
from ovlinspect.errors import NotFoundError, UsageError
from ovlinspect.model import Layer, LayerRole, LayerStack, MountEntry, OverlayMount
from ovlinspect.overlayopts import split_lowerdir, split_options, unescape_user


def stack_from_mount(m: OverlayMount, subpath: str = "", all_entries: list[MountEntry] | None = None) -> LayerStack:
    """The stack of a live mount; `covered` lists merged-view paths that other mounts sit on."""
    if m.spec is None:
        raise UsageError(
            f"{m.entry.mountpoint} is a fuse-overlayfs mount: its layers are not in mountinfo",
            hint="name the layers with --lowerdir/--upperdir, or the container with --container",
        )
    covered = covered_paths(m, all_entries or [])
    return LayerStack(
        layers=m.layers,
        effective=m.effective,
        label=f"mount {m.entry.mount_id} {m.entry.mountpoint}",
        mount=m,
        subpath=subpath,
        covered=covered,
        owner=m.owner,
    )


def covered_paths(m: OverlayMount, entries: list[MountEntry]) -> tuple[str, ...]:
    """Merged-view paths with another mount on them (mounts below this one in the mount tree)."""
    mp = m.entry.mountpoint.rstrip("/")
    out = []
    for e in entries:
        if e.mount_id == m.entry.mount_id:
            continue
        if e.mountpoint.startswith(mp + "/"):
            out.append(e.mountpoint[len(mp) :])
    return tuple(sorted(set(out)))


def stack_from_options(
    lowerdir: str,
    upperdir: str | None = None,
    options: str | None = None,
    module_params: dict[str, str] | None = None,
) -> LayerStack:
    """An explicit stack written like the mount options (`A:B::D`, `\\:` and `\\,` escapes).

    Options not given take the kernel module defaults, as a mount would.
    """
    lows, datas = split_lowerdir(lowerdir)
    layers: list[Layer] = []
    if upperdir:
        up = unescape_user(upperdir)
        layers.append(Layer(0, LayerRole.UPPER, upperdir, os.path.abspath(up), True, os.path.isdir(up), "given"))
    for role, group in ((LayerRole.LOWER, lows), (LayerRole.DATA_ONLY, datas)):
        for written, path in group:
            layers.append(Layer(len(layers), role, written, os.path.abspath(path), True, os.path.isdir(path), "given"))
    opts: dict[str, str | None] = {}
    for part in split_options(options or ""):
        k, eq, v = part.partition("=")
        opts[k] = v if eq else None
    eff = effective_options(opts, module_params or {})
    missing = [la.path for la in layers if not la.exists]
    if missing:
        raise NotFoundError(f"layer directory does not exist: {missing[0]}", path=missing[0])
    return LayerStack(tuple(layers), eff, "--lowerdir stack")


def find_mount_for_path(path: str, mounts: list[OverlayMount]) -> tuple[OverlayMount, str] | None:
    """The overlay mount whose mount point is the longest prefix of `path` -> (mount, subpath)."""
    best: tuple[OverlayMount, str] | None = None
    for m in mounts:
        mp = m.entry.mountpoint.rstrip("/") or "/"
        if path == mp or path.startswith(mp + "/") or mp == "/":
            if best is None or len(mp) > len(best[0].entry.mountpoint.rstrip("/")):
                sub = path[len(mp) :] if mp != "/" else path
                best = (m, sub.lstrip("/"))
    return best


def safe_layer_root(path: str) -> str:
    """The directory to read for a layer root that may be a symlink.

    Runtimes name layers through symlinks of their own (Docker's and containers/storage's
    `<home>/l/XXXX -> ../<id>/diff`); the kernel follows them. A symlinked layer root is followed
    here only when its target stays inside the directory that holds the link's parent (`<home>`);
    otherwise the path is returned unchanged and the layer reader, which opens layer roots with
    O_NOFOLLOW, refuses it — a layer swapped for a link to `/` never exposes host files.
    """
    try:
        if not stat.S_ISLNK(os.lstat(path).st_mode):
            return path
        real = os.path.realpath(path)
        home = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(path))))
    except (OSError, ValueError):
        return path
    if real.startswith(home.rstrip("/") + "/") and os.path.isdir(real):
        return real
    return path


def with_safe_roots(stack: LayerStack) -> LayerStack:
    """The stack with symlinked layer roots followed where that is safe (see safe_layer_root)."""
    layers = tuple(dataclasses.replace(la, path=safe_layer_root(la.path)) for la in stack.layers)
    if layers == stack.layers:
        return stack
    return dataclasses.replace(stack, layers=layers)


def resolve_target(
    target: str | None,
    roots: object,
    lowerdir: str | None = None,
    upperdir: str | None = None,
    options: str | None = None,
    container: str | None = None,
    image: str | None = None,
) -> LayerStack:
    """Resolve whatever the user named into a LayerStack. Raises UsageError/NotFoundError."""
    from ovlinspect import hostfs

    assert isinstance(roots, hostfs.HostRoots)
    named = sum(x is not None for x in (target, lowerdir, container, image))
    if named != 1:
        raise UsageError(
            "name exactly one target: a mount point (or a path under it), --lowerdir, --container or --image",
        )
    if container is not None or image is not None:
        from ovlinspect.runtimes import stack_for_named

        return with_safe_roots(stack_for_named(roots, container=container, image=image))
    if lowerdir is not None:
        return with_safe_roots(stack_from_options(lowerdir, upperdir, options, hostfs.read_module_params(roots)))
    if upperdir is not None or options is not None:
        raise UsageError("--upperdir/--options go with --lowerdir")
    assert target is not None
    from ovlinspect.inventory import collect_mounts

    inv = collect_mounts(roots)
    entries = next(iter(inv.all_entries.values()), [])
    path = posixpath.normpath(os.path.abspath(target))
    hit = find_mount_for_path(path, inv.mounts)
    if hit is None and not roots.replay:
        # the user may have named the mount through a host symlink (e.g. /var/lib/docker -> /data)
        real = os.path.realpath(target)
        hit = find_mount_for_path(real, inv.mounts)
    if hit is None:
        if not roots.replay and not os.path.exists(target):
            raise NotFoundError(f"{target}: no such file or directory, and not under any overlay mount")
        raise NotFoundError(
            f"{target} is not on an overlay mount",
            hint="name a merged dir (see `ovlinspect ls`), or the layers with --lowerdir/--upperdir",
        )
    m, sub = hit
    return with_safe_roots(stack_from_mount(m, sub, entries))
