"""The merged view reconstructed offline (`tree`) and what the top layer changes (`diff`). Pure.

Both walks are iterative (an explicit stack, never recursion: 10,000-deep trees work) and
stream: each directory's layer listings are read once, every name in their union is looked up
with `lookup_child` (the kernel's lookup, see lookup.py) against those listings, and visible
entries are yielded in depth-first order, names sorted. Memory: the listings of the directories
on the current path only.

The kernel's merged view, as stat(2) sees it, is exactly the set of names whose lookup is
positive; readdir can list more ("ghosts": a char 0/0 whiteout in a directory that is not
merged, or an xattr whiteout outside an `opaque=x` directory — readdir shows them, stat says
ENOENT). Those are reported by `whiteouts`, not as tree entries.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ovlinspect.analysis.lookup import LookupContext, MergedDir, context_below, lookup_child
from ovlinspect.errors import Problem
from ovlinspect.layers import Entry, LayerView, ReadProblem


@dataclass(frozen=True)
class TreeItem:
    """One visible entry of the merged view."""

    path: tuple[str, ...]
    entry: Entry
    layer: int  # the layer providing it (its metadata)
    data_layer: int | None = None  # metacopy: where the data is
    merged_layers: tuple[int, ...] = ()  # directories: every layer merged into it
    data_path: tuple[str, ...] | None = None  # metacopy: the data file's path in data_layer
    layer_path: tuple[str, ...] | None = None  # the entry's path inside its layer (redirects move it)


@dataclass(frozen=True)
class TreeError:
    """A name the kernel would fail to look up (EIO / EPERM / EINVAL), or an unreadable dir."""

    path: tuple[str, ...]
    verdict: str
    errno_name: str | None
    problem: Problem | None = None


class ListingView:
    """Wraps a LayerView: entries of directories listed in full are answered from the listing."""

    def __init__(self, inner: LayerView):
        self.inner = inner
        self.listings: dict[tuple[int, tuple[str, ...]], dict[str, Entry]] = {}

    def n_layers(self) -> int:
        return self.inner.n_layers()

    def entry(self, layer: int, path: tuple[str, ...]) -> Entry | None:
        if path:
            lst = self.listings.get((layer, path[:-1]))
            if lst is not None:
                return lst.get(path[-1])
        return self.inner.entry(layer, path)

    def children(self, layer: int, path: tuple[str, ...]) -> Iterator[Entry]:
        lst = self.listings.get((layer, path))
        if lst is not None:
            return iter(list(lst.values()))
        return self.inner.children(layer, path)

    def load(self, layer: int, path: tuple[str, ...]) -> dict[str, Entry]:
        lst = {e.name: e for e in self.inner.children(layer, path)}
        self.listings[(layer, path)] = lst
        return lst

    def drop(self, layer: int, path: tuple[str, ...]) -> None:
        self.listings.pop((layer, path), None)


def _list_dir(lv: ListingView, d: MergedDir, errors: list[TreeError]) -> tuple[list[str], list[tuple[int, tuple[str, ...]]]]:
    names: set[str] = set()
    keys = []
    for loc in d.locs:
        try:
            lst = lv.load(loc.layer, loc.path)
        except ReadProblem as rp:
            errors.append(TreeError(d.path, "unreadable", None, rp.problem))
            lst = {}
            lv.listings[(loc.layer, loc.path)] = lst
        keys.append((loc.layer, loc.path))
        names.update(lst)
    return sorted(names), keys


def walk_merged(ctx: LookupContext, start: MergedDir | None = None) -> Iterator[TreeItem | TreeError]:
    """Every visible entry under `start` (default: the root), depth first: in each directory the
    non-directories first, then each subdirectory followed by its subtree (names sorted).

    A directory's listings live only while its names are looked up; a frame whose last
    subdirectory is entered is dropped first, so a 10,000-deep chain costs one frame."""
    lv = ListingView(ctx.view)
    saved = ctx.view
    ctx.view = lv
    try:
        pending: list[list[tuple[TreeItem, MergedDir]]] = []  # per open directory: subdirs still to visit
        todo: MergedDir | None = start or ctx.root()
        while True:
            if todo is not None:
                errors: list[TreeError] = []
                names, keys = _list_dir(lv, todo, errors)
                yield from errors
                subdirs: list[tuple[TreeItem, MergedDir]] = []
                for name in names:
                    found = lookup_child(ctx, todo, name)
                    for p in ctx.problems:
                        yield TreeError(todo.path + (name,), "unreadable", None, p)
                    ctx.problems.clear()
                    if found.error:
                        yield TreeError(todo.path + (name,), found.error, found.errno_name)
                        continue
                    if not found.positive:
                        continue
                    assert found.entry is not None and found.loc is not None
                    item = TreeItem(
                        todo.path + (name,), found.entry, found.loc.layer,
                        found.data.layer if found.data else None,
                        tuple(lo.layer for lo in found.dir.locs) if found.dir else (),
                        found.data.path if found.data else None,
                        found.loc.path,
                    )
                    if found.dir is not None:
                        subdirs.append((item, found.dir))
                    else:
                        yield item
                for k in keys:
                    lv.drop(*k)
                if subdirs:
                    subdirs.reverse()  # pop() gives them in name order
                    pending.append(subdirs)
                todo = None
            if not pending:
                return
            top = pending[-1]
            item, d = top.pop()
            if not top:
                pending.pop()  # the last subdirectory: this frame is done (keeps deep chains flat)
            yield item
            todo = d
    finally:
        ctx.view = saved


# --------------------------------------------------------------------------------------------
# diff: what the top layer changes


@dataclass(frozen=True)
class Change:
    """One change the top layer makes to the view of the layers below it."""

    path: tuple[str, ...]
    change: str  # added | changed | deleted
    how: str  # new | copy_up | metacopy | type_change | opaque_replacement | renamed | dir | whiteout | hidden_by_opaque
    kind: str | None  # type in the top layer (None for deletions)
    layer: int
    detail: str = ""


def diff_top(ctx: LookupContext, top: int | None = None) -> Iterator[Change | TreeError]:
    """Walk the top visible layer and classify each of its entries against the layers below."""
    if not ctx.visible_idx:
        return
    top = ctx.visible_idx[0] if top is None else top
    below = context_below(ctx, top)
    lv = ListingView(ctx.view)
    saved = ctx.view
    ctx.view = lv
    below.view = lv
    try:
        # Depth first like walk_merged: each top-layer directory is listed, its names classified,
        # its listing dropped, then its subdirectories are visited; a frame whose last subdirectory
        # is entered is dropped first, so a 10,000-deep chain costs one frame (not O(depth^2) paths).
        pending: list[list[MergedDir]] = []  # per open directory: subdirectories still to visit
        todo: MergedDir | None = ctx.root()
        while True:
            if todo is not None:
                d = todo
                try:
                    lst = lv.load(top, d.path)
                except ReadProblem as rp:
                    yield TreeError(d.path, "unreadable", None, rp.problem)
                    lst = {}
                subdirs: list[MergedDir] = []
                for name in sorted(lst):
                    e = lst[name]
                    path = d.path + (name,)
                    before_parent = MergedDir(d.path, None, tuple(lo for lo in d.lowers if lo.layer > top))
                    before = lookup_child(below, before_parent, name)
                    if e.is_whiteout:
                        if before.positive:
                            assert before.entry is not None
                            yield Change(path, "deleted", "whiteout", before.entry.kind, top, f"{e.whiteout_kind} whiteout")
                        continue
                    full = lookup_child(ctx, d, name)
                    if full.error:
                        yield TreeError(path, full.error, full.errno_name)
                        continue
                    if not full.positive or full.loc is None or full.loc.layer != top:
                        continue
                    if not e.is_dir:
                        if before.positive and before.entry is not None:
                            if before.entry.is_dir:
                                yield Change(path, "changed", "type_change", e.kind, top, "a directory below is replaced")
                            elif e.metacopy:
                                yield Change(path, "changed", "metacopy", e.kind, top, "metadata-only copy-up (data stays below)")
                            else:
                                yield Change(path, "changed", "copy_up", e.kind, top, f"replaces the {before.entry.kind} of layer {before.loc.layer if before.loc else '?'}")
                        else:
                            yield Change(path, "added", "new", e.kind, top)
                        continue
                    # a directory of the top layer
                    raw = e.opaque
                    if full.dir is None:
                        continue
                    if e.redirect and full.dir.lowers:
                        yield Change(path, "changed" if before.positive else "added", "renamed", "dir", top, f"renamed from {e.redirect} (overlay.redirect)")
                    elif before.positive and before.entry is not None and before.entry.is_dir:
                        if raw == "y":
                            yield Change(path, "changed", "opaque_replacement", "dir", top, "opaque: replaces the directory below")
                            assert before.dir is not None
                            yield from _hidden_children(below, before.dir, lst_names=None, top=top, lv=lv, topdir=path)
                        else:
                            yield Change(path, "changed", "dir", "dir", top)
                    elif before.positive and before.entry is not None:
                        yield Change(path, "changed", "type_change", "dir", top, f"replaces the {before.entry.kind} below")
                    else:
                        yield Change(path, "added", "new", "dir", top)
                    subdirs.append(full.dir)
                lv.drop(top, d.path)
                if subdirs:
                    subdirs.reverse()  # pop() gives them in name order
                    pending.append(subdirs)
                todo = None
            if not pending:
                return
            frame = pending[-1]
            todo = frame.pop()
            if not frame:
                pending.pop()
    finally:
        ctx.view = saved


def _hidden_children(below: LookupContext, bdir: MergedDir, lst_names: None, top: int, lv: ListingView,
                     topdir: tuple[str, ...]) -> Iterator[Change]:
    """The entries of the replaced directory below an opaque one (each shows as deleted)."""
    names: set[str] = set()
    for loc in bdir.locs:
        try:
            names.update(e.name for e in lv.inner.children(loc.layer, loc.path))
        except ReadProblem:
            continue
    for n in sorted(names):
        f = lookup_child(below, bdir, n)
        if f.positive and f.entry is not None and f.loc is not None:
            top_e = lv.entry(top, topdir + (n,))
            if top_e is not None and not top_e.is_whiteout:
                continue  # re-created in the opaque dir: reported as its own change
            yield Change(topdir + (n,), "deleted", "hidden_by_opaque", f.entry.kind, top,
                         f"hidden by the opaque directory (was in layer {f.loc.layer})")
