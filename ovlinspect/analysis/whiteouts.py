"""Every whiteout / opaque / redirect / metacopy marker per layer, and lint findings about them. Pure.

Walks each layer on its own (iteratively, through the LayerView), never the merged view, so a
marker nobody can see is still found. Lint rules (ids are stable, documented in README):
- whiteout_hides_nothing: nothing of that name is visible in the layers below it;
- whiteout_in_lowest_layer: the lowest lower layer has a whiteout (hides nothing; readdir of an
  unmerged directory lists it as an entry that stat cannot find);
- whiteout_in_opaque_dir: a whiteout inside an opaque=y directory of the same layer (pointless,
  overlayfs.rst "whiteouts and opaque directories");
- xattr_whiteout_outside_x_dir: an xattr whiteout whose directory is not marked opaque=x in a
  middle lower layer: lookup still treats it as a whiteout (ovl_path_is_whiteout), but readdir
  lists it (only opaque=x dirs of middle lowers are filtered, readdir.c) -> a name ls shows and
  stat says ENOENT;
- opaque_bad_value: overlay.opaque other than exactly "y" or "x" (the kernel reads one byte);
- opaque_x_ignored: opaque=x on the upper or the lowest lower layer (namei.c ignores it there);
- opaque_in_lowest_layer: opaque=y on the lowest lower layer (nothing below to hide);
- metacopy_without_data: lookup fails with EIO (no lower data), or open fails (ENOENT: an absolute
  redirect into data-only layers that lack it); metacopy_not_enabled: the stack is
  not mounted with metacopy=on, lookup fails with EPERM;
- redirect_not_followed: redirect_dir=nofollow, lookup fails with EPERM; invalid_redirect: EINVAL;
  redirect_target_missing: no layer below has the redirect's target;
- tar_whiteout_on_disk / tar_opaque_on_disk: an OCI tar marker (`.wh.<name>`, `.wh..wh..opq`)
  left as a plain file by a tool that did not convert it: the kernel does NOT obey it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ovlinspect.analysis.lookup import LookupContext, _redirect_valid, context_below, lookup_path
from ovlinspect.errors import Problem
from ovlinspect.layers import TAR_WHITEOUT_PREFIX, Entry, ReadProblem
from ovlinspect.model import Severity

TAR_OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True)
class Marker:
    """One overlay marker found on disk in one layer."""

    layer: int
    path: tuple[str, ...]
    marker: str  # whiteout | xattr_whiteout | opaque | redirect | metacopy | tar_whiteout | tar_opaque
    value: str = ""


@dataclass(frozen=True)
class Finding:
    id: str
    severity: Severity
    layer: int
    path: tuple[str, ...]
    message: str


def _fmt(p: tuple[str, ...]) -> str:
    return "/" + "/".join(p)


def markers_of(layer: int, path: tuple[str, ...], e: Entry) -> list[Marker]:
    out = []
    if e.chardev_whiteout:
        out.append(Marker(layer, path, "whiteout", "char 0/0"))
    if e.xwhiteout:
        out.append(Marker(layer, path, "xattr_whiteout", "overlay.whiteout"))
    if e.is_dir and e.opaque is not None:
        out.append(Marker(layer, path, "opaque", e.opaque))
    if e.redirect is not None:
        out.append(Marker(layer, path, "redirect", e.redirect))
    if e.metacopy:
        out.append(Marker(layer, path, "metacopy", ""))
    if e.name == TAR_OPAQUE:
        out.append(Marker(layer, path, "tar_opaque", ""))
    elif e.name.startswith(TAR_WHITEOUT_PREFIX):
        out.append(Marker(layer, path, "tar_whiteout", e.name[len(TAR_WHITEOUT_PREFIX):]))
    return out


def scan_layer(ctx: LookupContext, layer: int) -> Iterator[tuple[Marker, str | None] | Problem]:
    """Markers of one layer, with the opaque value of the marker's parent dir in that layer."""
    root = ctx.view.entry(layer, ())
    stack: list[tuple[tuple[str, ...], str | None]] = [((), root.opaque if root else None)]
    while stack:
        path, parent_opaque = stack.pop()
        try:
            kids = sorted(ctx.view.children(layer, path), key=lambda x: x.name, reverse=True)
        except ReadProblem as rp:
            yield rp.problem
            continue
        for e in kids:
            p = path + (e.name,)
            for m in markers_of(layer, p, e):
                yield (m, parent_opaque)
            if e.is_dir:
                stack.append((p, e.opaque))


def lint(ctx: LookupContext, m: Marker, parent_opaque: str | None) -> list[Finding]:
    out: list[Finding] = []
    L = m.layer
    is_upper = ctx.has_upper and L == 0
    lowest = L == ctx.last_lower
    role = ctx.role(L)

    def add(fid: str, sev: Severity, msg: str) -> None:
        out.append(Finding(fid, sev, L, m.path, msg))

    if m.marker in ("whiteout", "xattr_whiteout"):
        if L in ctx.data_idx:
            return out
        if lowest:
            add("whiteout_in_lowest_layer", Severity.WARNING,
                f"{_fmt(m.path)}: a whiteout in the lowest layer hides nothing (and readdir may list it while stat fails)")
        else:
            below = context_below(ctx, L)
            f = lookup_path(below, m.path)
            if f is None or not f.positive:
                add("whiteout_hides_nothing", Severity.INFO, f"{_fmt(m.path)}: no layer below {L} shows this name")
        if parent_opaque == "y":
            add("whiteout_in_opaque_dir", Severity.INFO, f"{_fmt(m.path)}: a whiteout inside an opaque directory serves no purpose")
        if m.marker == "xattr_whiteout" and (parent_opaque != "x" or is_upper or lowest):
            why = "the upper layer" if is_upper else "the lowest layer" if lowest else "a directory not marked overlay.opaque=x"
            add("xattr_whiteout_outside_x_dir", Severity.WARNING,
                f"{_fmt(m.path)}: an xattr whiteout in {why}: lookup hides the name, but readdir still lists it (stat: ENOENT)")
    elif m.marker == "opaque":
        v = m.value
        if v not in ("y", "x"):
            add("opaque_bad_value", Severity.WARNING, f"{_fmt(m.path)}: overlay.opaque={v!r} is neither 'y' nor 'x': the kernel treats the directory as not opaque")
        elif v == "x" and (is_upper or lowest):
            add("opaque_x_ignored", Severity.INFO, f"{_fmt(m.path)}: opaque=x is ignored on {role} layer {L} ({'upper' if is_upper else 'lowest lower'})")
        elif v == "y" and lowest:
            add("opaque_in_lowest_layer", Severity.INFO, f"{_fmt(m.path)}: opaque=y on the lowest layer hides nothing")
    elif m.marker == "metacopy":
        sub = ctx if L == 0 else context_below(ctx, L - 1) if L in ctx.lower_idx else None
        if sub is not None:
            f = lookup_path(sub, m.path)
            if f is not None and f.error == "metacopy_data_missing":
                add("metacopy_without_data", Severity.CRITICAL, f"{_fmt(m.path)}: metacopy file with no data in any layer below: the kernel fails with EIO")
            elif f is not None and f.positive and f.loc is not None and f.loc.layer == L and f.data is None:
                add("metacopy_without_data", Severity.CRITICAL, f"{_fmt(m.path)}: metacopy file whose data is in no data-only layer: opening it fails (ENOENT)")
            elif f is not None and f.error == "metacopy_not_enabled":
                add("metacopy_not_enabled", Severity.CRITICAL, f"{_fmt(m.path)}: metacopy file, but the stack is not mounted with metacopy=on: EPERM")
    elif m.marker == "redirect":
        if not _redirect_valid(m.value):
            add("invalid_redirect", Severity.CRITICAL, f"{_fmt(m.path)}: invalid overlay.redirect {m.value!r}: the kernel fails the lookup with EINVAL")
        else:
            if not ctx.follow:
                add("redirect_not_followed", Severity.CRITICAL, f"{_fmt(m.path)}: redirect_dir=nofollow: the kernel refuses this redirect (EPERM)")
            tgt = tuple(c for c in m.value.split("/") if c) if m.value.startswith("/") else m.path[:-1] + (m.value,)
            lower = [li for li in ctx.visible_idx + ctx.data_idx if li > L]
            if lower and not any(ctx.entry(li, tgt) is not None for li in lower):
                add("redirect_target_missing", Severity.WARNING, f"{_fmt(m.path)}: redirect to {m.value} but no layer below has {_fmt(tgt)}")
    elif m.marker == "tar_whiteout":
        add("tar_whiteout_on_disk", Severity.WARNING,
            f"{_fmt(m.path)}: an OCI tar whiteout left on disk as a file: the kernel does not delete {m.value!r}, it shows this file")
    elif m.marker == "tar_opaque":
        add("tar_opaque_on_disk", Severity.WARNING,
            f"{_fmt(m.path)}: an OCI tar opaque marker left on disk: the kernel does not make this directory opaque")
    return out


def scan_markers(ctx: LookupContext, layers: list[int] | None = None) -> Iterator[Marker | Finding | Problem]:
    """Every marker of every layer (top first), each followed by its findings; problems inline."""
    for li in layers if layers is not None else list(range(len(ctx.stack.layers))):
        try:
            for it in scan_layer(ctx, li):
                if isinstance(it, Problem):
                    yield it
                    continue
                m, parent_opaque = it
                yield m
                yield from lint(ctx, m, parent_opaque)
                if ctx.problems:
                    yield from ctx.problems
                    ctx.problems.clear()
        except ReadProblem as rp:
            yield rp.problem
