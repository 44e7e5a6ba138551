"""Assess one overlay mount: resolve its layers, fill in effective options, raise health flags.

Pure: the filesystem is reached only through the `Probe` protocol (exists/realpath/page_size).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Protocol

from ovlinspect.errors import InputError, Problem
from ovlinspect.model import (
    EffectiveOption,
    HealthFlag,
    Layer,
    LayerRole,
    LayerSpec,
    MountEntry,
    Namespace,
    OverlayMount,
    OverlaySpec,
    Severity,
)
from ovlinspect.overlayopts import parse_overlay_options

# fs/overlayfs/params.h: #define OVL_MAX_STACK 500 (lower layers, data-only included)
KERNEL_MAX_LOWERS = 500
# moby daemon/graphdriver/overlay2/overlay.go: maxDepth = 128 (layers in an image chain)
DOCKER_MAX_DEPTH = 128
NEAR_FRACTION = 0.9

FUSE_OVERLAY_TYPES = ("fuse.fuse-overlayfs", "fuse-overlayfs")


class Probe(Protocol):
    def exists(self, path: str) -> bool | None: ...
    def realpath(self, path: str) -> str: ...
    def page_size(self) -> int: ...


def is_overlay(entry: MountEntry) -> bool:
    return entry.fstype == "overlay" or entry.fstype in FUSE_OVERLAY_TYPES


def _candidate_bases(entry: MountEntry, spec: OverlaySpec) -> list[tuple[str, str]]:
    """Directories a relative layer path may be relative to, each with how it was derived.

    Docker's overlay2 driver mounts long chains with `l/XXXX` and `<id>/diff` relative to its
    home and chdir()s there (moby overlay2 mountFrom); the mount point is `<home>/<id>/merged`.
    containerd (mount_linux.go compactLowerdirOption) makes lowers relative to their common
    parent (`<snapshots>/<n>/fs`) while upperdir stays absolute. Manual mounts are often made
    from the mount point's parent.
    """
    bases: list[tuple[str, str]] = []
    mp = entry.mountpoint
    if mp.endswith("/merged"):
        bases.append((posixpath.dirname(posixpath.dirname(mp)), "runtime home (mount point is <home>/<id>/merged)"))
    for la in (spec.upperdir, *spec.lowerdirs, *spec.datadirs):
        if la is not None and la.path.startswith("/") and not la.path.startswith("/proc/"):
            bases.append((posixpath.dirname(posixpath.dirname(la.path)), "parent of the layer dirs (<root>/<n>/fs)"))
            break
    bases.append((posixpath.dirname(mp.rstrip("/")) or "/", "mount point's parent directory"))
    seen: set[str] = set()
    out = []
    for b, why in bases:
        if b not in seen:
            seen.add(b)
            out.append((b, why))
    return out


def _resolve(spec: LayerSpec, bases: list[tuple[str, str]], probe: Probe) -> tuple[str, bool, bool | None, str]:
    """-> (path, resolved, exists, resolution)."""
    p = spec.path
    if p.startswith("/proc/self/fd/") or p.startswith("/dev/fd/"):
        return p, False, None, "a file descriptor of the mounting process: cannot be resolved from outside"
    if p.startswith("/"):
        return p, True, probe.exists(p), "absolute"
    unverified: tuple[str, str] | None = None
    for base, why in bases:
        cand = posixpath.normpath(posixpath.join(base, p))
        ex = probe.exists(cand)
        if ex:
            return cand, True, True, f"relative, resolved against {base} ({why})"
        if ex is None and unverified is None:
            unverified = (cand, why)
    if unverified is not None:
        cand, why = unverified
        return cand, True, None, f"relative, assumed against {posixpath.dirname(cand)} ({why}); not verified"
    return p, False, False, "relative path that resolves against no known base directory"


def _bool_param(params: dict[str, str], name: str) -> bool | None:
    v = params.get(name)
    if v is None:
        return None
    return v.strip().upper() in ("Y", "1", "ON")


# the mount options effective_options() reads: its result depends on these (and the module params) only
_EFFECTIVE_KEYS = (
    "index",
    "metacopy",
    "nfs_export",
    "xino",
    "redirect_dir",
    "userxattr",
    "uuid",
    "fsync",
    "volatile",
    "verity",
    "ro",
)


def effective_options(options: dict[str, str | None], params: dict[str, str]) -> dict[str, EffectiveOption]:
    """Each feature's value, from the mount when printed, else the module/kernel default.

    Defaults mirror fs/overlayfs/params.c: redirect_dir defaults to on when the module's
    redirect_dir=Y, else follow when redirect_always_follow=Y, else nofollow
    (ovl_redirect_mode_def); index/metacopy/nfs_export from their module params; xino is auto
    when xino_auto=Y else off; metacopy=on without redirect_dir implies redirect_dir=on;
    userxattr implies redirect_dir=nofollow... the kernel prints that one itself.
    """
    eff: dict[str, EffectiveOption] = {}

    def mod(name: str, param: str, on: str = "on", off: str = "off") -> None:
        if name in options and options[name] is not None:
            eff[name] = EffectiveOption(str(options[name]), "mount")
            return
        b = _bool_param(params, param)
        eff[name] = EffectiveOption("unknown", "unknown") if b is None else EffectiveOption(on if b else off, "module-default")

    mod("index", "index")
    mod("metacopy", "metacopy")
    mod("nfs_export", "nfs_export")
    mod("xino", "xino_auto", on="auto", off="off")
    if options.get("redirect_dir") is not None:
        eff["redirect_dir"] = EffectiveOption(str(options["redirect_dir"]), "mount")
    elif eff["metacopy"].value == "on" and eff["metacopy"].source == "mount":
        eff["redirect_dir"] = EffectiveOption("on", "implied")
    else:
        rd, follow = _bool_param(params, "redirect_dir"), _bool_param(params, "redirect_always_follow")
        if rd is None or follow is None:
            eff["redirect_dir"] = EffectiveOption("unknown", "unknown")
        else:
            eff["redirect_dir"] = EffectiveOption("on" if rd else ("follow" if follow else "nofollow"), "module-default")
    eff["userxattr"] = EffectiveOption("on", "mount") if "userxattr" in options else EffectiveOption("off", "kernel-default")
    if options.get("uuid") is not None:
        eff["uuid"] = EffectiveOption(str(options["uuid"]), "mount")
    else:
        eff["uuid"] = EffectiveOption("auto", "kernel-default")
    if options.get("fsync") is not None:
        eff["fsync"] = EffectiveOption(str(options["fsync"]), "mount")
    elif "volatile" in options:
        eff["fsync"] = EffectiveOption("volatile", "mount")
    else:
        eff["fsync"] = EffectiveOption("auto", "kernel-default")
    if options.get("verity") is not None:
        eff["verity"] = EffectiveOption(str(options["verity"]), "mount")
    else:
        eff["verity"] = EffectiveOption("off", "kernel-default")
    ro = "ro" in options
    eff["readonly"] = EffectiveOption("on" if ro else "off", "mount" if ro else "kernel-default")
    return eff


def xattr_prefix(effective: dict[str, EffectiveOption]) -> str:
    """`user.overlay.` with userxattr, else `trusted.overlay.` (overlayfs.rst "User xattr")."""
    return "user.overlay." if effective.get("userxattr", EffectiveOption("off", "")).value == "on" else "trusted.overlay."


def state_words(mount: OverlayMount) -> list[str]:
    """Short state flags for tables."""
    eff = mount.effective
    words = []
    if mount.spec is None:
        return ["fuse"]
    if mount.upper is None:
        words.append("lower-only")
    if "ro" in mount.spec.options:
        words.append("ro")
    for key, word in (("redirect_dir", "redirect"), ("metacopy", "metacopy"), ("index", "index")):
        if key in eff and eff[key].value == "on":
            words.append(word)
    if eff.get("fsync") and eff["fsync"].value == "volatile":
        words.append("volatile")
    if eff.get("userxattr") and eff["userxattr"].value == "on":
        words.append("userxattr")
    if mount.datas:
        words.append(f"data-only:{len(mount.datas)}")
    return words


class AssessMemo:
    """What mounts of one listing share, computed once (a busy host runs many containers of one
    image: the same lowers, the same options). Only valid with one probe and one set of module
    parameters, i.e. within one listing."""

    def __init__(self) -> None:
        self.layers: dict[tuple[object, ...], Layer] = {}
        self.effective: dict[tuple[object, ...], dict[str, EffectiveOption]] = {}
        # (id(lowerdirs), id(datadirs), first index) -> (lowerdirs, datadirs, layers, flags); the
        # spec tuples are kept so that their ids stay theirs while the memo lives
        self.chains: dict[tuple[int, int, int], tuple[object, object, tuple[Layer, ...], tuple[HealthFlag, ...]]] = {}
        self.page_size: int | None = None


def _assess_layers(
    specs: tuple[LayerSpec, ...],
    first_index: int,
    bases: Callable[[], tuple[list[tuple[str, str]], tuple[str, ...]]],
    probe: Probe,
    memo: AssessMemo,
    out: list[Layer],
    flags: list[HealthFlag],
) -> bool:
    """Resolve `specs` (chain positions from first_index) into `out`, flagging missing and
    unresolvable layers into `flags`. Returns whether every path was absolute."""
    absolute = True
    for idx, ls in enumerate(specs, first_index):
        p = ls.path
        if p.startswith("/"):
            key: tuple[object, ...] = (idx, ls.role, ls.written, p)
            cands: list[tuple[str, str]] = []  # an absolute path needs no base
        else:
            absolute = False
            cands, bkey = bases()
            key = (idx, ls.role, ls.written, p, bkey)
        la = memo.layers.get(key)
        if la is None:
            path, resolved, exists, how = _resolve(ls, cands, probe)
            la = memo.layers[key] = Layer(idx, ls.role, ls.written, path, resolved, exists, how)
        out.append(la)
        if la.resolved and la.exists is not False:
            continue
        label = f"{ls.role.value} layer {idx} ({ls.path})"
        if not la.resolved:
            flags.append(HealthFlag("layer_unresolved", Severity.WARNING, f"{label}: {la.resolution}"))
        else:
            flags.append(
                HealthFlag(
                    "layer_missing",
                    Severity.CRITICAL,
                    f"{label} no longer exists at {la.path}: files from it may still be served from the kernel's cache, "
                    "but the mount cannot be recreated",
                )
            )
    return absolute


def assess_mount(
    entry: MountEntry,
    probe: Probe,
    module_params: dict[str, str],
    namespace: Namespace | None = None,
    memo: AssessMemo | None = None,
) -> OverlayMount:
    """Decode and assess an overlay mount entry. Raises InputError if its options are malformed."""
    flags: list[HealthFlag] = []
    problems: list[Problem] = []
    if entry.fstype in FUSE_OVERLAY_TYPES:
        flags.append(
            HealthFlag(
                "fuse_overlayfs",
                Severity.INFO,
                "fuse-overlayfs mount: its layers are not shown in mountinfo; inspect them through the runtime's records",
            )
        )
        return OverlayMount(entry, None, (), {}, tuple(flags), namespace)
    spec = parse_overlay_options(entry.super_options_raw)
    memo = memo if memo is not None else AssessMemo()
    ekey = tuple((k, spec.options.get(k)) for k in _EFFECTIVE_KEYS if k in spec.options)
    cached_eff = memo.effective.get(ekey)
    if cached_eff is None:
        cached_eff = memo.effective[ekey] = effective_options(spec.options, module_params)
    eff = dict(cached_eff)
    lazy: list[tuple[list[tuple[str, str]], tuple[str, ...]]] = []

    def bases() -> tuple[list[tuple[str, str]], tuple[str, ...]]:
        """The candidate bases for relative paths (and their key), computed only if one is met."""
        if not lazy:
            b = _candidate_bases(entry, spec)
            lazy.append((b, tuple(x for x, _ in b)))
        return lazy[0]

    layers: list[Layer] = []
    if spec.upperdir is not None:
        _assess_layers((spec.upperdir,), 0, bases, probe, memo, layers, flags)
    # the lower chain: mounts that print the same lowerdir= string share the very same LayerSpec
    # tuples (overlayopts memoises the split), so an all-absolute chain is assessed once per listing
    offset = len(layers)
    ck = (id(spec.lowerdirs), id(spec.datadirs), offset)
    hit = memo.chains.get(ck)
    if hit is not None and hit[0] is spec.lowerdirs and hit[1] is spec.datadirs:
        layers.extend(hit[2])
        flags.extend(hit[3])
    else:
        chain: list[Layer] = []
        chain_flags: list[HealthFlag] = []
        absolute = _assess_layers(spec.lowerdirs + spec.datadirs, offset, bases, probe, memo, chain, chain_flags)
        if absolute:  # a relative chain resolves against this mount's own bases: not shared
            memo.chains[ck] = (spec.lowerdirs, spec.datadirs, tuple(chain), tuple(chain_flags))
        layers.extend(chain)
        flags.extend(chain_flags)
    nlow = len(spec.lowerdirs) + len(spec.datadirs)
    if nlow >= KERNEL_MAX_LOWERS * NEAR_FRACTION:
        flags.append(
            HealthFlag(
                "lower_count_near_kernel_limit",
                Severity.WARNING,
                f"{nlow} lower layers: the kernel allows at most {KERNEL_MAX_LOWERS}",
            )
        )
    elif nlow + 1 >= DOCKER_MAX_DEPTH * NEAR_FRACTION:
        flags.append(
            HealthFlag(
                "lower_count_near_docker_limit",
                Severity.WARNING,
                f"{nlow} lower layers: Docker refuses images deeper than {DOCKER_MAX_DEPTH} layers (squash or rebase the image)",
            )
        )
    if memo.page_size is None:
        memo.page_size = probe.page_size()
    page = memo.page_size
    optlen = len(entry.super_options_raw.encode("utf-8", "surrogateescape"))
    if optlen >= page * NEAR_FRACTION:
        flags.append(
            HealthFlag(
                "options_near_page_limit",
                Severity.WARNING,
                f"option string is {optlen} bytes, near the {page}-byte mount data limit: runtimes switch to "
                "relative layer paths here, and one more layer may fail to mount",
            )
        )
    wpath: str | None = None
    if spec.workdir:
        wbases = [] if spec.workdir.startswith("/") else bases()[0]
        wpath, wres, _, _ = _resolve(LayerSpec(LayerRole.UPPER, spec.workdir, spec.workdir), wbases, probe)
        marker = posixpath.join(wpath, "work", "incompat", "volatile")
        if wres and probe.exists(marker):
            vol = eff["fsync"].value == "volatile"
            flags.append(
                HealthFlag(
                    "volatile_marker",
                    Severity.INFO if vol else Severity.WARNING,
                    f"{marker} exists: "
                    + (
                        "expected while this volatile mount is up; after a crash or unmount it blocks the next mount "
                        "of this upper until the upper and work dirs are recreated"
                        if vol
                        else "left behind by an earlier volatile mount; the upper dir's contents may be incomplete"
                    ),
                )
            )
    return OverlayMount(entry, spec, tuple(layers), eff, tuple(flags), namespace, None, tuple(problems), wpath)


def assess_or_problem(
    entry: MountEntry,
    probe: Probe,
    module_params: dict[str, str],
    namespace: Namespace | None = None,
    memo: AssessMemo | None = None,
) -> tuple[OverlayMount | None, Problem | None]:
    """assess_mount, turning malformed options into a Problem that names the line and field."""
    try:
        return assess_mount(entry, probe, module_params, namespace, memo), None
    except InputError as exc:
        where = f"mountinfo line {entry.line_number}" if entry.line_number else f"mount {entry.mount_id}"
        return None, Problem(
            "malformed", f"{where}, field 11 (super options): {exc.message}", entry.mountpoint, entry.line_number
        )
