"""Overlay path lookup done offline, the way fs/overlayfs/namei.c does it, and `why-missing`. Pure.

The filesystem comes in through `ovlinspect.layers.LayerView` (the safe reader, or a literal in
tests). `lookup_child` mirrors ovl_lookup() + ovl_lookup_layer() + ovl_lookup_single() (kernel
6.7+, with the xwhiteouts change of 6.8/6.7.2): per child name, the upper dir of the parent first,
then the parent's lower stack top-down:
- absent -> next layer; a whiteout (char 0/0, or a zero-size regular file with
  `overlay.whiteout` — ovl_path_is_whiteout(), honoured by lookup in *every* layer) -> deleted;
- a non-directory wins and stops the lookup, unless it carries `overlay.metacopy`: then the data
  is looked up below (a regular file must follow; none -> EIO "metacopy with no lower data",
  metacopy=off -> EPERM "refusing to follow metacopy origin");
- a directory merges with the lower directories of that name until `overlay.opaque` = "y"
  (exactly one byte: ovl_get_dir_xattr_val reads 1 byte) or a lower non-directory stops it;
  the opaque mark is not read on the last lower layer (d->last); "x" only flags xwhiteouts;
- `overlay.redirect` (relative: a new name in the same parent; absolute: a path from the layer
  roots, switching to the root's lower stack) changes the name looked up below; a redirect found
  while redirect_dir=nofollow makes the lookup fail with EPERM ("refusing to follow redirect");
  an invalid redirect (empty component, '/' in a relative one) fails with EINVAL.
- the root merges every lower root; opaque marks on layer roots are never read (ovl_get_root).
Data-only layers are never looked up by path; only an absolute redirect of a metacopy file
reaches them (ovl_lookup_data_layers).
"""

from __future__ import annotations

import difflib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ovlinspect.errors import Problem
from ovlinspect.layers import Entry, LayerView, ReadProblem
from ovlinspect.model import LayerRole, LayerStack

MAX_SYMLINK_HOPS = 40  # include/linux/namei.h MAXSYMLINKS
SUGGEST_SCAN_LIMIT = 20000  # entries per layer dir scanned for near-name suggestions
# entries scanned in all (breadth-first over the visible layers) to find the same name elsewhere:
# a fixed bound, so a not_found answer never costs a whole-tree walk on a big layer
ELSEWHERE_SCAN_LIMIT = 20000
ELSEWHERE_MAX = 5

VERDICTS = (
    "visible",
    "whiteout",
    "opaque_parent",
    "shadowed_by_non_directory",
    "not_a_directory_parent",
    "redirected_away",
    "covered_by_mount",
    "not_found",
    "metacopy_data_missing",
    "metacopy_not_enabled",
    "redirect_not_followed",
    "invalid_redirect",
    "symlink_loop",
    "unknown",
)


@dataclass(frozen=True)
class Loc:
    """A directory (or entry) in one layer: layer index in the stack, components from its root."""

    layer: int
    path: tuple[str, ...]


@dataclass(frozen=True)
class MergedDir:
    """A directory of the merged view: its upper dir (if any) and its lower stack, top first."""

    path: tuple[str, ...]
    upper: Loc | None
    lowers: tuple[Loc, ...]

    @property
    def locs(self) -> tuple[Loc, ...]:
        return ((self.upper,) if self.upper else ()) + self.lowers


@dataclass(frozen=True)
class Event:
    """What one layer said during the lookup of one name."""

    layer: int
    path: tuple[str, ...]  # where in that layer
    what: str  # absent | whiteout | directory | opaque | non_directory | stops_merge | redirect | metacopy | data | unknown
    detail: str = ""


@dataclass(frozen=True)
class Found:
    """The result of looking up one name in a merged directory."""

    name: str
    entry: Entry | None  # the entry the merged view shows (None: negative)
    loc: Loc | None  # where that entry lives
    dir: MergedDir | None  # for a directory: its merged stack
    events: tuple[Event, ...]
    whiteout_layer: int | None = None  # negative because of a whiteout here
    error: str | None = None  # kernel lookup error verdict (metacopy_data_missing, ...)
    errno_name: str | None = None
    data: Loc | None = None  # metacopy: where the data comes from
    uncertain: tuple[str, ...] = ()  # decisions that needed unreadable xattrs
    lower_hits: tuple[Loc, ...] = ()  # every lower entry merged in (dirs) / in the data chain (files)

    @property
    def positive(self) -> bool:
        return self.entry is not None and self.error is None


class LookupContext:
    """A stack as the lookup needs it: which index is upper, the lower roots, the data layers, options."""

    def __init__(self, stack: LayerStack, view: LayerView):
        self.stack = stack
        self.view = view
        layers = stack.layers
        self.has_upper = bool(layers) and layers[0].role is LayerRole.UPPER
        self.lower_idx = [i for i, la in enumerate(layers) if la.role is LayerRole.LOWER]
        self.data_idx = [i for i, la in enumerate(layers) if la.role is LayerRole.DATA_ONLY]
        self.visible_idx = ([0] if self.has_upper else []) + self.lower_idx
        self.last_lower = self.lower_idx[-1] if self.lower_idx else None
        eff = stack.effective
        rd = eff["redirect_dir"].value if "redirect_dir" in eff else "follow"
        # params.c: every redirect_dir mode but "nofollow" follows (ovl_redirect_follow);
        # "off" = do not create, follow (the module's redirect_always_follow only shapes the default)
        self.follow = rd != "nofollow"
        self.metacopy = eff["metacopy"].value == "on" if "metacopy" in eff else False
        self.root_lowers = tuple(Loc(i, ()) for i in self.lower_idx)
        self.problems: list[Problem] = []
        self.problem_layers: set[int] = set()  # layers where a read failed during this lookup

    def root(self) -> MergedDir:
        return MergedDir((), Loc(0, ()) if self.has_upper else None, self.root_lowers)

    def entry(self, layer: int, path: tuple[str, ...]) -> Entry | None:
        try:
            return self.view.entry(layer, path)
        except ReadProblem as rp:
            self.problems.append(rp.problem)
            self.problem_layers.add(layer)
            return None

    def role(self, layer: int) -> str:
        return self.stack.layers[layer].role.value


@dataclass
class _D:
    """struct ovl_lookup_data."""

    name: str
    is_dir: bool = False
    opaque: bool = False
    stop: bool = False
    last: bool = False
    redirect: str | None = None
    metacopy: bool = False
    absolute_redirect: bool = False
    error: tuple[str, str] | None = None  # (verdict, errno name)
    events: list[Event] = field(default_factory=list)
    uncertain: list[str] = field(default_factory=list)
    whiteout_layer: int | None = None


def _redirect_valid(buf: str) -> bool:
    """ovl_get_redirect_xattr(): absolute without empty components, relative without '/'."""
    if not buf:
        return False
    if buf.startswith("/"):
        return all(part for part in buf[1:].split("/"))
    return "/" not in buf


def _lookup_single(ctx: LookupContext, d: _D, layer: int, parent: tuple[str, ...], name: str,
                   prelen: int, post: str, is_upper: bool) -> Loc | None:
    """ovl_lookup_single(): one name in one layer dir. Returns where the entry is, or None."""
    last_element = post == ""
    path = parent + (name,)
    e = ctx.entry(layer, path)
    if e is None:
        d.events.append(Event(layer, path, "absent"))
        return None
    if e.is_whiteout:
        d.stop = d.opaque = True
        d.whiteout_layer = layer
        d.events.append(Event(layer, path, "whiteout", e.whiteout_kind or ""))
        return None
    if e.kind == "file" and e.size == 0 and not e.xattrs_known:
        d.uncertain.append(f"layer {layer}: whether the empty file {'/'.join(path)} is an xattr whiteout")
    if last_element and d.metacopy and e.kind != "file":
        d.stop = True
        d.events.append(Event(layer, path, "stops_merge", "not a regular file under a metacopy file"))
        return None
    if not e.is_dir:
        if d.is_dir or not last_element:
            d.stop = True
            d.events.append(Event(layer, path, "stops_merge", e.kind))
            return None
        if e.kind == "file" and not e.xattrs_known:
            d.uncertain.append(f"layer {layer}: whether {'/'.join(path)} is a metacopy file")
        d.metacopy = e.metacopy
        d.stop = not d.metacopy
        d.events.append(Event(layer, path, "metacopy" if d.metacopy else "non_directory", e.kind))
        if not d.metacopy or d.last:
            return Loc(layer, path)
    else:
        if last_element:
            d.is_dir = True
        if d.last:
            d.events.append(Event(layer, path, "directory", "lowest layer: markers not read"))
            return Loc(layer, path)
        if not e.xattrs_known:
            d.uncertain.append(f"layer {layer}: whether {'/'.join(path)} is opaque or redirected")
        raw = e.opaque
        val = raw if raw is not None and len(raw.encode("utf-8", "surrogateescape")) == 1 else None
        if val == "y":
            d.stop = True
            if last_element:
                d.opaque = True
            d.events.append(Event(layer, path, "opaque", "overlay.opaque=y"))
            return Loc(layer, path)
        detail = "overlay.opaque=x (holds xattr whiteouts)" if (val == "x" and last_element and not is_upper) else ""
        d.events.append(Event(layer, path, "directory", detail))
    # ovl_check_redirect()
    if e.redirect is not None:
        buf = e.redirect
        if not _redirect_valid(buf):
            d.error = ("invalid_redirect", "EINVAL")
            d.events.append(Event(layer, path, "redirect", f"invalid redirect {buf!r}"))
            return Loc(layer, path)
        if buf.startswith("/"):
            d.absolute_redirect = True
            d.stop = False
        else:
            d.absolute_redirect = False
            buf = d.name[:prelen] + buf
        buf += post
        d.redirect = buf
        d.name = buf
        d.events.append(Event(layer, path, "redirect", buf))
    else:
        d.absolute_redirect = False
    return Loc(layer, path)


def _lookup_layer(ctx: LookupContext, d: _D, base: Loc, is_upper: bool) -> Loc | None:
    """ovl_lookup_layer(): a relative name in `base`, or an absolute (redirect) path from the layer root."""
    if not d.name.startswith("/"):
        return _lookup_single(ctx, d, base.layer, base.path, d.name, 0, "", is_upper)
    cur: tuple[str, ...] = ()
    rem = len(d.name) - 1  # counting down from the end: the prefix can change (nested redirects)
    hit: Loc | None = Loc(base.layer, ())
    while hit is not None:
        s_at = len(d.name) - rem
        nxt = d.name.find("/", s_at)
        if nxt < 0:
            nxt = len(d.name)
        comp = d.name[s_at:nxt]
        post = d.name[nxt:]
        end = post == ""
        if d.error:
            return None
        hit = _lookup_single(ctx, d, base.layer, cur, comp, s_at, post, is_upper)
        if hit is None or end:
            break
        e = ctx.entry(hit.layer, hit.path)
        if e is None or not e.is_dir:
            return None
        cur = hit.path
        rem -= len(comp) + 1
    return hit


def lookup_child(ctx: LookupContext, parent: MergedDir, name: str) -> Found:
    """ovl_lookup(): look `name` up in the merged directory `parent`."""
    d = _D(name=name, last=False if ctx.follow else not parent.lowers)
    upper_hit: Loc | None = None
    upper_metacopy = False
    lowers = parent.lowers
    if parent.upper is not None:
        upper_hit = _lookup_layer(ctx, d, parent.upper, is_upper=True)
        if d.error:
            return _fail(name, d, upper_hit)
        if upper_hit is not None and not d.is_dir:
            upper_metacopy = d.metacopy
        if d.redirect and d.redirect.startswith("/"):
            lowers = ctx.root_lowers
    stack: list[Loc] = []
    i = 0
    while not d.stop and i < len(lowers):
        lower = lowers[i]
        if not ctx.follow:
            d.last = i == len(lowers) - 1
        elif d.is_dir or not ctx.data_idx:
            d.last = lower.layer == ctx.last_lower
        this = _lookup_layer(ctx, d, lower, is_upper=False)
        if d.error:
            return _fail(name, d, upper_hit)
        if this is not None:
            if (upper_metacopy or d.metacopy) and not ctx.metacopy:
                d.error = ("metacopy_not_enabled", "EPERM")
                return _fail(name, d, upper_hit)
            if not (d.metacopy and stack):
                stack.append(this)
            if d.redirect and not ctx.follow:
                d.error = ("redirect_not_followed", "EPERM")
                return _fail(name, d, upper_hit)
        if d.stop:
            break
        if d.redirect and d.redirect.startswith("/") and lowers is not ctx.root_lowers:
            lowers = ctx.root_lowers
            i = next((k for k, lo in enumerate(lowers) if lo.layer == lower.layer), i)
        i += 1
    data: Loc | None = None
    lazy = False
    if d.metacopy and stack and ctx.data_idx and d.absolute_redirect and d.redirect:
        lazy = True
        # ovl_lookup_data_layers(): the data of a lower metacopy file lives in a data-only layer
        comps = tuple(c for c in d.redirect.split("/") if c)
        # the kernel defers this lookup to the first open (ovl_maybe_lookup_lowerdata): stat
        # works either way, and only open fails (ENOENT) when no data-only layer has the file
        for li in ctx.data_idx:
            e = ctx.entry(li, comps)
            if e is not None and e.kind == "file":
                data = Loc(li, comps)
                d.events.append(Event(li, comps, "data", "data-only layer"))
                break
            d.events.append(Event(li, comps, "absent", "data-only layer: opening the file fails (ENOENT)"))
        d.metacopy = False
    if d.metacopy or (upper_metacopy and not stack):
        d.error = ("metacopy_data_missing", "EIO")
        return _fail(name, d, upper_hit)
    top = upper_hit if upper_hit is not None else (stack[0] if stack else None)
    if top is None:
        return Found(name, None, None, None, tuple(d.events), whiteout_layer=d.whiteout_layer,
                     uncertain=tuple(d.uncertain))
    entry = ctx.entry(top.layer, top.path)
    if entry is None:  # vanished meanwhile
        return Found(name, None, None, None, tuple(d.events), uncertain=tuple(d.uncertain))
    mdir = None
    if entry.is_dir:
        up = upper_hit if (upper_hit is not None) else None
        mdir = MergedDir(parent.path + (name,), up, tuple(stack))
    elif entry.kind == "file" and (upper_metacopy or entry.metacopy):
        if data is None and stack and not lazy:
            data = stack[-1]
    return Found(name, entry, top, mdir, tuple(d.events), data=data, uncertain=tuple(d.uncertain),
                 lower_hits=tuple(stack))


def _fail(name: str, d: _D, upper_hit: Loc | None) -> Found:
    assert d.error is not None
    return Found(name, None, upper_hit, None, tuple(d.events), error=d.error[0], errno_name=d.error[1],
                 uncertain=tuple(d.uncertain))


# --------------------------------------------------------------------------------------------
# why-missing


@dataclass(frozen=True)
class Explanation:
    """The answer for one path: visible or not, the verdict, the providing layer, the evidence."""

    path: str
    visible: bool
    verdict: str
    layer: int | None  # the layer providing it (visible) or the layer whose marker decides
    steps: tuple[dict[str, Any], ...]
    kind: str | None = None  # type of the visible entry
    shadows: tuple[int, ...] = ()  # lower layers holding a copy it hides
    suggestions: tuple[str, ...] = ()
    message: str = ""
    assumed_verdict: str | None = None  # with verdict "unknown": the answer if no marker was hidden
    problems: tuple[Problem, ...] = ()
    data_layer: int | None = None
    resolved: str | None = None  # the merged path after symlinks, when different
    elsewhere: tuple[str, ...] = ()  # not_found: where an entry of the same name exists ("/p/name (layer N)")


def split_path(path: str) -> list[str]:
    return [c for c in path.split("/") if c and c != "."]


def _fmt(comps: tuple[str, ...] | list[str]) -> str:
    return "/" + "/".join(comps)


KEEP_LAST_STEPS = 64  # plain steps kept for the last components of a deep path (all notable ones are kept)
_NOTABLE = {"whiteout", "opaque", "redirect", "stops_merge", "metacopy", "data", "symlink", "covered", "non_directory"}


@dataclass(frozen=True)
class _Level:
    """What the lookup of one path component left behind (compact: no paths, deep paths stay cheap)."""

    same_path_layers: frozenset[int]  # layers merged into this dir at the same path
    events: tuple[tuple[int, str, str], ...]  # (layer, what, detail)


class _Walk:
    def __init__(self, ctx: LookupContext):
        self.ctx = ctx
        self.notable: list[tuple[int, Any]] = []
        self.recent: deque[tuple[int, Any]] = deque(maxlen=KEEP_LAST_STEPS * 4)
        self.uncertain: list[str] = []
        self.seq = 0
        self.elided = 0

    def step(self, comp: str, merged: tuple[str, ...], ev: Event | None, what: str, detail: str = "") -> None:
        # kept raw and formatted at the end: only the steps shown pay for their (long) path strings
        self.seq += 1
        raw = (comp, merged, ev, what, detail)
        if what in _NOTABLE:
            self.notable.append((self.seq, raw))
        else:
            if len(self.recent) == self.recent.maxlen:
                self.elided += 1
            self.recent.append((self.seq, raw))

    def _format(self, raw: tuple[str, tuple[str, ...], Event | None, str, str]) -> dict[str, Any]:
        comp, merged, ev, what, detail = raw
        rec: dict[str, Any] = {"component": comp, "path": _fmt(merged), "event": what, "detail": detail}
        if ev is not None:
            la = self.ctx.stack.layers[ev.layer]
            rec["layer"] = {"index": ev.layer, "role": la.role.value, "path": la.path}
            rec["layer_path"] = _fmt(ev.path)
            note = self.ctx.stack.layer_notes.get(ev.layer)
            if note:
                rec["note"] = dict(note)
        else:
            rec["layer"] = None
        return rec

    def record(self, comp: str, merged: tuple[str, ...], found: Found) -> None:
        for ev in found.events:
            self.step(comp, merged, ev, ev.what, ev.detail)
        self.uncertain.extend(found.uncertain)

    def steps(self) -> tuple[dict[str, Any], ...]:
        allst = sorted(self.notable + list(self.recent), key=lambda x: x[0])
        out = [self._format(r) for _, r in allst]
        if self.elided:
            out.insert(0, {"component": "", "path": "", "event": "elided", "layer": None,
                           "detail": f"{self.elided} plain steps of the upper components not shown"})
        return tuple(out)


def _present_in(ctx: LookupContext, comps: tuple[str, ...], layers: list[int]) -> list[int]:
    """Layers where `comps` exists physically (every ancestor a real directory there)."""
    return [li for li in layers if ctx.entry(li, comps) is not None]


def _suggest(ctx: LookupContext, parent: MergedDir | None, name: str) -> list[str]:
    if parent is None:
        return []
    names: set[str] = set()
    for loc in parent.locs:
        try:
            lister = getattr(ctx.view, "names", None)
            if lister is not None:  # the reader lists names without lstat/xattrs: cheap
                names.update(lister(loc.layer, loc.path, SUGGEST_SCAN_LIMIT))
                continue
            for n, e in enumerate(ctx.view.children(loc.layer, loc.path)):
                if n >= SUGGEST_SCAN_LIMIT:
                    break
                names.add(e.name)
        except ReadProblem as rp:
            ctx.problems.append(rp.problem)
    out = [n for n in names if n.lower() == name.lower() and n != name]
    out += [n for n in difflib.get_close_matches(name, list(names), n=5, cutoff=0.75) if n not in out and n != name]
    return sorted(out)[:5]


def _elsewhere(ctx: LookupContext, name: str, asked: tuple[str, ...]) -> list[str]:
    """Where an entry named `name` exists in some visible layer (breadth-first, shallow paths
    first, at most ELSEWHERE_SCAN_LIMIT entries read in all). Physical presence only: the
    operator then asks why-missing about that path for its visibility."""
    found: list[str] = []
    seen: set[tuple[str, ...]] = set()
    budget = ELSEWHERE_SCAN_LIMIT
    queue: list[tuple[int, tuple[str, ...]]] = [(li, ()) for li in ctx.visible_idx]
    head = 0
    while head < len(queue) and budget > 0 and len(found) < ELSEWHERE_MAX:
        layer, path = queue[head]
        head += 1
        try:
            for e in ctx.view.children(layer, path):
                budget -= 1
                p = path + (e.name,)
                if e.name == name and p != asked and p not in seen and not e.is_whiteout:
                    seen.add(p)
                    found.append(f"{_fmt(p)} (layer {layer})")
                    if len(found) >= ELSEWHERE_MAX:
                        break
                if e.is_dir:
                    queue.append((layer, p))
                if budget <= 0:
                    break
        except ReadProblem:
            continue  # best effort: the verdict does not rest on this
    return found


_ERROR_WORDS = {
    "metacopy_data_missing": "a metacopy file whose data is in no lower layer: the kernel fails the lookup with EIO",
    "metacopy_not_enabled": "a metacopy file, but the stack is not mounted with metacopy=on: the kernel refuses it (EPERM)",
    "redirect_not_followed": "a redirected directory, but redirect_dir=nofollow: the kernel refuses it (EPERM)",
    "invalid_redirect": "an invalid overlay.redirect value: the kernel fails the lookup with EINVAL",
}


def explain_path(stack: LayerStack, view: LayerView, path: str, max_hops: int = MAX_SYMLINK_HOPS,
                 ctx: LookupContext | None = None) -> Explanation:
    """Why `path` (inside the merged view) is or is not visible, with evidence layer by layer.

    Iterative; memory stays linear in the path depth (10,000-component paths work): only the
    current directory's stack is kept, plus a compact summary per component.
    """
    ctx = ctx or LookupContext(stack, view)
    ctx.problems = []
    ctx.problem_layers = set()
    w = _Walk(ctx)
    pending = split_path(path)
    pending.reverse()  # a stack: pop() gives the next component
    cur = ctx.root()
    comps: list[str] = []  # the resolved merged path of `cur`
    levels: list[_Level] = []  # levels[m] = the lookup that produced comps[: m + 1]
    hops = 0
    covered = {c.rstrip("/") or "/" for c in stack.covered}
    original = _fmt(split_path(path))

    def done(visible: bool, verdict: str, layer: int | None, msg: str, last: str | None = None, **kw: Any) -> Explanation:
        resolved = _fmt(comps + ([last] if last is not None else []))
        assumed = None
        if w.uncertain and verdict != "covered_by_mount":
            # never claim "visible" (or a reason) on a guess: the assumption is kept aside
            assumed, verdict, visible = verdict, "unknown", False
            msg += "; but " + w.uncertain[0] + " could not be read (trusted.* xattrs need CAP_SYS_ADMIN: run as root)"
        elif verdict != "covered_by_mount" and any(layer is None or pl < layer for pl in ctx.problem_layers):
            # a layer at or above the decisive one could not be read: what it holds could change
            # the answer (a whiteout, an opaque dir, an entry of its own); layers below cannot
            p = ctx.problems[0]
            assumed, verdict = verdict, "unknown"
            msg += f"; but {p.path or 'a layer'} could not be read ({p.message}), so this is not certain"
        if verdict == "unknown":
            visible = False  # `visible` is true only when proven; `assumed_verdict` keeps the best guess
        return Explanation(original, visible, verdict, layer, w.steps(), message=msg, assumed_verdict=assumed,
                           problems=tuple(ctx.problems), resolved=resolved if resolved != original else None, **kw)

    while pending:
        comp = pending.pop()
        if comp == "..":
            if comps:
                comps.pop()
                levels.pop()
                back, _ = resolve_dir(ctx, comps)
                cur = back if back is not None else ctx.root()
            continue
        merged = cur.path + (comp,)
        if _fmt(merged) in covered:
            w.step(comp, merged, None, "covered", "another mount is mounted here")
            return done(False, "covered_by_mount", None,
                        f"{_fmt(merged)} has another mount on top of it: what is there does not come from these layers", last=comp)
        found = lookup_child(ctx, cur, comp)
        w.record(comp, merged, found)
        is_last = not pending
        if found.error:
            lay = found.loc.layer if found.loc else (found.events[-1].layer if found.events else None)
            return done(False, found.error, lay, f"{_fmt(merged)}: {_ERROR_WORDS[found.error]}", last=comp)
        if found.positive:
            assert found.entry is not None and found.loc is not None
            e = found.entry
            if is_last:
                below = [li for li in ctx.visible_idx if li > found.loc.layer]
                hidden = [li for li in _present_in(ctx, merged, below) if not any(h.layer == li for h in found.lower_hits)]
                merged_in = [h.layer for h in found.lower_hits if h.layer != found.loc.layer]
                what = {"dir": "directory"}.get(e.kind, e.kind)
                msg = f"{_fmt(merged)} is visible: a {what} from layer {found.loc.layer} ({ctx.role(found.loc.layer)})"
                if e.kind == "dir" and merged_in:
                    msg += f", merged with layers {', '.join(map(str, merged_in))}"
                if found.data is not None and found.data.layer != found.loc.layer:
                    msg += f"; metacopy: its data comes from layer {found.data.layer}"
                if hidden:
                    msg += f"; it hides the copies in layers {', '.join(map(str, hidden))}"
                if e.kind == "symlink":
                    msg += f" (a symlink to {e.target!r}, not followed)"
                return done(True, "visible", found.loc.layer, msg, last=comp, kind=e.kind, shadows=tuple(hidden),
                            data_layer=found.data.layer if found.data else None)
            if e.is_dir:
                assert found.dir is not None
                cur = found.dir
                comps.append(comp)
                same = frozenset(lo.layer for lo in cur.locs if lo.path == cur.path)
                levels.append(_Level(same, tuple((ev.layer, ev.what, ev.detail) for ev in found.events)))
                continue
            if e.kind == "symlink":
                hops += 1
                w.step(comp, merged, Event(found.loc.layer, found.loc.path, "symlink"), "symlink",
                       f"-> {e.target} (resolved inside the merged root)")
                if hops > max_hops or e.target is None:
                    return done(False, "symlink_loop", found.loc.layer,
                                f"too many symlinks (more than {max_hops}) resolving {original} (ELOOP)", last=comp)
                tgt = e.target
                if tgt.startswith("/"):
                    cur, comps, levels = ctx.root(), [], []
                for c in reversed([c for c in tgt.split("/") if c and c != "."]):
                    pending.append(c)
                continue
            # a non-directory in the middle of the path
            full = merged + tuple(reversed(pending))
            below = [li for li in ctx.visible_idx if li > found.loc.layer]
            under = _present_in(ctx, full, below)
            if under:
                return done(False, "shadowed_by_non_directory", found.loc.layer,
                            f"{_fmt(merged)} is a {e.kind} in layer {found.loc.layer}, which replaces the directory of "
                            f"layers {', '.join(map(str, under))} where {_fmt(full)} exists", last=comp)
            return done(False, "not_a_directory_parent", found.loc.layer,
                        f"{_fmt(merged)} is a {e.kind} (layer {found.loc.layer}), not a directory", last=comp)
        # negative
        full = merged + tuple(reversed(pending))
        if found.whiteout_layer is not None:
            wl = found.whiteout_layer
            below = [li for li in ctx.visible_idx if li > wl]
            under = _present_in(ctx, merged, below)
            msg = f"{_fmt(merged)} is deleted by a whiteout in layer {wl} ({ctx.role(wl)})"
            note = ctx.stack.layer_notes.get(wl, {}).get("created_by")
            if note:
                msg += f": {note}"
            if under:
                msg += f"; it hides the copies in layers {', '.join(map(str, under))}"
            else:
                msg += "; no lower layer has it (the whiteout hides nothing)"
            return done(False, "whiteout", wl, msg, last=comp)
        # absent from the merge: does some layer have it physically, cut off above?
        present = _present_in(ctx, full, ctx.visible_idx)
        if present:
            j = present[0]
            cause = _cut_cause(ctx, levels, comps, j)
            if cause is not None:
                verdict, layer, msg = cause
                return done(False, verdict, layer, msg + f"; {_fmt(full)} exists in layer {j}", last=comp)
        datas = _present_in(ctx, full, ctx.data_idx)
        sugg = _suggest(ctx, cur, comp)
        msg = f"{_fmt(full)} exists in no layer" if not present else f"{_fmt(merged)} is absent from the merged directory"
        if datas:
            msg += f"; it is in data-only layer {datas[0]}, which is never visible by path"
        if sugg:
            msg += "; near names: " + ", ".join(sugg)
        other = _elsewhere(ctx, full[-1], full) if not present else []
        if other:
            msg += "; the same name elsewhere: " + ", ".join(other)
        return done(False, "not_found", None, msg, last=comp, suggestions=tuple(sugg), elsewhere=tuple(other))
    # the path named the root (or resolved to a directory with nothing after it)
    if comps:
        return done(True, "visible", cur.locs[0].layer if cur.locs else None, f"{_fmt(comps)} is a visible directory", kind="dir")
    w.step("", (), None, "directory", "the merged root")
    return done(True, "visible", 0 if ctx.visible_idx else None, "/ is the merged root", kind="dir")


def _cut_cause(ctx: LookupContext, levels: list[_Level], comps: list[str], j: int) -> tuple[str, int | None, str] | None:
    """Layer `j` holds the path, yet the merge never reached it: find the ancestor that cut it off."""
    for m, lv in enumerate(levels):
        if j in lv.same_path_layers:
            continue
        return _explain_cut(ctx, lv, tuple(comps[: m + 1]), j)
    return None  # the direct parent has layer j: the lookup of the name itself stopped above j


def _explain_cut(ctx: LookupContext, lv: _Level, path: tuple[str, ...], j: int) -> tuple[str, int | None, str]:
    for layer, what, detail in lv.events:
        if layer >= j:
            break
        if what == "opaque":
            return ("opaque_parent", layer, f"{_fmt(path)} is opaque (overlay.opaque=y) in layer {layer}: nothing below it is merged")
        if what == "whiteout":
            return ("whiteout", layer, f"{_fmt(path)} was deleted by a whiteout in layer {layer} and made again above: "
                    "the old contents below are hidden")
        if what == "redirect":
            return ("redirected_away", layer, f"{_fmt(path)} in layer {layer} is redirected to {detail}: "
                    "the lookup below follows the redirect, not this name")
        if what in ("non_directory", "stops_merge"):
            return ("shadowed_by_non_directory", layer, f"{_fmt(path)} meets a {detail or 'non-directory'} in layer {layer}, "
                    "which stops the merge")
    return ("not_found", None, f"the merge of {_fmt(path)} stops above layer {j} (lowest lower {ctx.last_lower})")


def context_below(ctx: LookupContext, top: int) -> LookupContext:
    """The same stack without layer `top` and everything above it (the view `top` was made on)."""
    sub = LookupContext.__new__(LookupContext)
    sub.stack = ctx.stack
    sub.view = ctx.view
    sub.has_upper = False
    sub.lower_idx = [i for i in ctx.lower_idx if i > top]
    sub.data_idx = list(ctx.data_idx)
    sub.visible_idx = list(sub.lower_idx)
    sub.last_lower = sub.lower_idx[-1] if sub.lower_idx else None
    sub.follow = ctx.follow
    sub.metacopy = ctx.metacopy
    sub.root_lowers = tuple(Loc(i, ()) for i in sub.lower_idx)
    sub.problems = ctx.problems
    return sub


def resolve_dir(ctx: LookupContext, comps: tuple[str, ...] | list[str]) -> tuple[MergedDir | None, Found | None]:
    """Look a path up component by component (no symlinks followed) -> its MergedDir, or the
    failing Found (None, found) / (None, None) when a component is not a directory."""
    cur = ctx.root()
    last: Found | None = None
    for c in comps:
        last = lookup_child(ctx, cur, c)
        if not last.positive or last.dir is None:
            return None, last
        cur = last.dir
    return cur, last


def lookup_path(ctx: LookupContext, comps: tuple[str, ...]) -> Found | None:
    """The Found of a whole path (None when an ancestor is missing or not a directory)."""
    if not comps:
        return None
    parent, _ = resolve_dir(ctx, comps[:-1])
    if parent is None:
        return None
    return lookup_child(ctx, parent, comps[-1])
