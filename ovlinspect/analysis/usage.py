"""Disk usage analyses, pure (no I/O): what shadows what in one merged directory, and the
per-layer / per-target / total report with shared vs unique attribution.

Lookup rules mirrored from fs/overlayfs/namei.c (ovl_lookup): per name, layers top-down — a
whiteout ends the lookup (everything below is deleted, i.e. hidden); a non-directory wins and
hides everything below; a directory merges with lower directories of that name until an opaque
directory or a lower non-directory stops it. With metacopy=on an upper file marked
`overlay.metacopy` takes its data from the next lower file (fs/overlayfs/namei.c, `ovl_lookup`
"metacopy" chain): that lower file is not hidden, its data is in use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ovlinspect.errors import Problem
from ovlinspect.model import LayerRole, ShadowUsage, TreeUsage

DIR, REG, LNK, WHITEOUT, OTHER = "dir", "reg", "lnk", "whiteout", "other"


@dataclass(frozen=True)
class EntryInfo:
    """One name in one layer's directory, as lstat and the overlay xattrs describe it."""

    kind: str  # DIR | REG | LNK | WHITEOUT | OTHER
    size: int = 0
    allocated: int = 0  # st_blocks * 512
    ino: int = 0
    nlink: int = 1
    opaque: bool = False  # dirs: `overlay.opaque` == "y"
    metacopy: bool = False  # regular files: has `overlay.metacopy`


@dataclass(frozen=True)
class DirMerge:
    """The verdict for one merged directory. Positions index the contributing layers (top first)."""

    hidden: tuple[tuple[int, str], ...] = ()  # (pos, name): that layer's entry is not visible
    copy_ups: tuple[tuple[int, int, str], ...] = ()  # (upper pos, lower pos, name): both regular files
    descend: tuple[tuple[str, tuple[int, ...]], ...] = ()  # merged subdirs with >= 2 contributors


def merge_dir(layers: Sequence[Mapping[str, EntryInfo]]) -> DirMerge:
    """Decide, for every name of a merged directory, which layers' entries are visible.

    `layers[pos]` is the listing of that contributing layer's directory (top first; names present
    in one layer only may be left out: they are visible and need no decision).
    """
    names: dict[str, list[int]] = {}
    for pos, listing in enumerate(layers):
        for name in listing:
            names.setdefault(name, []).append(pos)
    hidden: list[tuple[int, str]] = []
    copy_ups: list[tuple[int, int, str]] = []
    descend: list[tuple[str, tuple[int, ...]]] = []
    for name, where in names.items():
        if len(where) < 2:
            continue
        top = layers[where[0]][name]
        if top.kind == WHITEOUT:
            hidden.extend((p, name) for p in where[1:])
        elif top.kind != DIR:
            below = where[1:]
            nxt = layers[below[0]][name]
            if top.kind == REG and nxt.kind == REG:
                copy_ups.append((where[0], below[0], name))
                if top.metacopy:
                    below = below[1:]  # the data source stays in use
            hidden.extend((p, name) for p in below)
        else:
            merged = [where[0]]
            stop = top.opaque
            rest = where[1:]
            i = 0
            while not stop and i < len(rest):
                e = layers[rest[i]][name]
                if e.kind != DIR:
                    break
                merged.append(rest[i])
                stop = e.opaque
                i += 1
            hidden.extend((p, name) for p in rest[i:])
            if len(merged) > 1:
                descend.append((name, tuple(merged)))
    return DirMerge(tuple(hidden), tuple(copy_ups), tuple(descend))


# ---------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class LayerUse:
    """A layer as one target uses it."""

    key: int  # index into DuReport.layers
    role: LayerRole
    index: int


@dataclass(frozen=True)
class Target:
    """What the user named (a mount, a stack, a container, an image), as the layers it uses."""

    label: str
    layers: tuple[LayerUse, ...]


@dataclass(frozen=True)
class LayerRow:
    key: int
    path: str
    role: LayerRole  # from the first target that uses it
    index: int
    usage: TreeUsage
    shared_by: int  # how many targets use this layer dir
    used_by: tuple[int, ...]  # target indexes
    shadow: ShadowUsage | None = None  # relative to the stack of `shadow_target`
    shadow_target: int | None = None


@dataclass(frozen=True)
class TargetRow:
    label: str
    layer_keys: tuple[int, ...]
    apparent_bytes: int
    allocated_bytes: int
    unique_apparent_bytes: int  # in layers no other target uses: what deleting this target frees
    unique_allocated_bytes: int
    shared_apparent_bytes: int
    shared_allocated_bytes: int
    complete: bool


_COUNTS = ("apparent_bytes", "allocated_bytes", "files", "dirs", "symlinks", "whiteouts", "opaque_dirs", "other", "inodes", "skipped_mounts")


@dataclass(frozen=True)
class Totals:
    """Every distinct layer once; bytes of files hard-linked across layers counted once."""

    layers: int
    counts: dict[str, int] = field(default_factory=dict)  # _COUNTS
    unique_apparent_bytes: int = 0  # in layers used by one target only
    unique_allocated_bytes: int = 0
    shared_apparent_bytes: int = 0  # in layers used by two or more targets
    shared_allocated_bytes: int = 0
    hidden_apparent_bytes: int | None = None
    hidden_allocated_bytes: int | None = None
    copy_up_allocated_bytes: int | None = None
    complete: bool = True


@dataclass(frozen=True)
class DuReport:
    layers: tuple[LayerRow, ...]
    targets: tuple[TargetRow, ...]
    totals: Totals
    problems: tuple[Problem, ...] = ()


def build_report(
    paths: Sequence[str],
    targets: Sequence[Target],
    usage: Mapping[int, TreeUsage],
    cross_layer_dup: tuple[int, int, int] = (0, 0, 0),
    shadows: Mapping[int, tuple[int, ShadowUsage]] | None = None,
    problems: Sequence[Problem] = (),
) -> DuReport:
    """Assemble the report. paths[key] is the distinct layer dir `key`; usage[key] its walk;
    cross_layer_dup the (apparent, allocated, inodes) counted twice by a plain sum because of
    hard links between layer dirs; shadows[key] = (target index, ShadowUsage)."""
    shadows = shadows or {}
    used_by: dict[int, list[int]] = {k: [] for k in range(len(paths))}
    first_use: dict[int, LayerUse] = {}
    for ti, t in enumerate(targets):
        for lu in t.layers:
            if ti not in used_by[lu.key]:
                used_by[lu.key].append(ti)
            first_use.setdefault(lu.key, lu)
    rows: list[LayerRow] = []
    for key, path in enumerate(paths):
        lu = first_use.get(key, LayerUse(key, LayerRole.LOWER, 0))
        sh = shadows.get(key)
        rows.append(
            LayerRow(
                key=key,
                path=path,
                role=lu.role,
                index=lu.index,
                usage=usage.get(key, TreeUsage(complete=False)),
                shared_by=len(used_by[key]),
                used_by=tuple(used_by[key]),
                shadow=sh[1] if sh else None,
                shadow_target=sh[0] if sh else None,
            )
        )
    trows: list[TargetRow] = []
    for t in targets:
        keys = tuple(dict.fromkeys(lu.key for lu in t.layers))
        a = b = ua = ub = 0
        complete = True
        for k in keys:
            u = rows[k].usage
            a += u.apparent_bytes
            b += u.allocated_bytes
            complete = complete and u.complete
            if rows[k].shared_by <= 1:
                ua += u.apparent_bytes
                ub += u.allocated_bytes
        trows.append(TargetRow(t.label, keys, a, b, ua, ub, a - ua, b - ub, complete))
    counts = dict.fromkeys(_COUNTS, 0)
    for r in rows:
        for c in _COUNTS:
            counts[c] += getattr(r.usage, c)
    counts["apparent_bytes"] -= cross_layer_dup[0]
    counts["allocated_bytes"] -= cross_layer_dup[1]
    counts["inodes"] -= cross_layer_dup[2]
    shared_a = sum(r.usage.apparent_bytes for r in rows if r.shared_by > 1)
    shared_b = sum(r.usage.allocated_bytes for r in rows if r.shared_by > 1)
    with_shadow = [r.shadow for r in rows if r.shadow is not None]
    totals = Totals(
        layers=len(rows),
        counts=counts,
        unique_apparent_bytes=sum(r.usage.apparent_bytes for r in rows if r.shared_by <= 1),
        unique_allocated_bytes=sum(r.usage.allocated_bytes for r in rows if r.shared_by <= 1),
        shared_apparent_bytes=shared_a,
        shared_allocated_bytes=shared_b,
        hidden_apparent_bytes=sum(s.hidden_apparent_bytes for s in with_shadow) if with_shadow else None,
        hidden_allocated_bytes=sum(s.hidden_allocated_bytes for s in with_shadow) if with_shadow else None,
        copy_up_allocated_bytes=sum(s.copy_up_allocated_bytes for s in with_shadow) if with_shadow else None,
        complete=all(r.usage.complete for r in rows),
    )
    return DuReport(tuple(rows), tuple(trows), totals, tuple(problems))
