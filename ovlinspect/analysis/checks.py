"""The `check` registry: health checks as small objects (stable id, validated thresholds, on/off)
turning gathered analysis results into findings with the monitoring status 0/1/2/3. Pure: no I/O.

The inputs (`CheckInputs`) are plain data gathered by ovlinspect/checks_run.py from the other
commands' analyses (mount inventory, statvfs of backing filesystems, btrfs verdicts, orphans).
A check whose input could not be gathered (timed out, module absent, unreadable) reports UNKNOWN
with the reason — never a fake OK.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ovlinspect.analysis.mounts import DOCKER_MAX_DEPTH, KERNEL_MAX_LOWERS, NEAR_FRACTION
from ovlinspect.errors import Problem
from ovlinspect.model import OverlayMount, Severity


class Status(enum.IntEnum):
    """The monitoring plugin convention (Nagios / Icinga / Sensu): the exit code of `check`."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


# Worst-of ordering: a real CRITICAL or WARNING is never masked by a check that could not run.
_RANK = {Status.OK: 0, Status.UNKNOWN: 1, Status.WARNING: 2, Status.CRITICAL: 3}


def worst(statuses: Any) -> Status:
    """The overall status: CRITICAL > WARNING > UNKNOWN > OK."""
    out = Status.OK
    for s in statuses:
        if _RANK[s] > _RANK[out]:
            out = s
    return out


# ---------------------------------------------------------------- inputs (plain data) ----------


@dataclass(frozen=True)
class FilesystemState:
    """A filesystem that holds upper dirs or a runtime data root, as statvfs and readdir saw it."""

    mountpoint: str
    fstype: str
    device: str
    holders: tuple[str, ...]  # what lives there, in words: "upperdir of /x/merged", "data root /var/lib/docker"
    size_bytes: int | None = None
    avail_bytes: int | None = None  # f_bavail * f_frsize: what an unprivileged writer can still use
    inodes: int | None = None  # f_files; 0 on filesystems without a fixed inode table (btrfs)
    inodes_free: int | None = None  # f_favail
    statvfs_error: str | None = None  # why the numbers are missing (timed out, EIO, ...)
    dtype: bool | None = None  # readdir fills d_type (None: could not tell)
    dtype_detail: str = ""  # the dir that was read, or why it could not be told


@dataclass(frozen=True)
class BtrfsState:
    """One btrfs filesystem's metadata-exhaustion verdict (from ovlinspect.btrfs_sysfs)."""

    filesystem: str  # a mount point (or the fsid when not mounted here)
    verdict: str  # "ok" | "warning" | "critical" | "unknown"
    reason: str
    remedies: tuple[str, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)  # raw numbers, names with units


@dataclass(frozen=True)
class OrphanTotal:
    """Bytes held by layers no container or image references (from ovlinspect.runtimes)."""

    runtime: str
    orphan_bytes: int
    orphan_count: int
    where: str = ""


@dataclass(frozen=True)
class LeftoverScan:
    """Left-overs found under the runtime data roots (lstat only, nothing followed)."""

    stale_merged: tuple[tuple[str, str], ...] = ()  # (runtime, <layer>/merged dir that is not a mount point)
    volatile_markers: tuple[tuple[str, str], ...] = ()  # (runtime, <workdir>/work/incompat/volatile of an unmounted layer)
    roots: tuple[str, ...] = ()  # the layer homes that were scanned


@dataclass(frozen=True)
class CheckInputs:
    """Everything the checks look at. A None value with an *_error says why it is missing."""

    mounts: tuple[OverlayMount, ...] | None = None
    mounts_error: str | None = None
    mount_problems: tuple[Problem, ...] = ()
    filesystems: tuple[FilesystemState, ...] | None = None
    filesystems_error: str | None = None
    btrfs: tuple[BtrfsState, ...] | None = None
    btrfs_error: str | None = None
    orphans: tuple[OrphanTotal, ...] | None = None
    orphans_error: str | None = None
    leftovers: LeftoverScan | None = None
    leftovers_error: str | None = None
    page_size: int = 4096


# ---------------------------------------------------------------- results -----------------------


@dataclass(frozen=True)
class Finding:
    """One thing that is wrong (or, for OK, one thing that was looked at): what, where, what to do."""

    check: str
    status: Status
    where: str  # "filesystem /var/lib/docker", "mount /var/lib/docker/overlay2/<id>/merged"
    what: str
    todo: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)  # filesystem= / mount= / runtime=


@dataclass(frozen=True)
class Metric:
    """A raw number for trend alerting; `name` carries the unit (Prometheus naming)."""

    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


# HELP text of every metric family the checks emit (the Prometheus renderer adds the run metrics).
METRIC_HELP: dict[str, str] = {
    "ovlinspect_filesystem_size_bytes": "Size of a filesystem holding overlay upper dirs or a runtime data root (statvfs f_blocks*f_frsize).",
    "ovlinspect_filesystem_avail_bytes": "Bytes an unprivileged writer can still use on that filesystem (statvfs f_bavail*f_frsize).",
    "ovlinspect_filesystem_inodes": "Total inodes of that filesystem (statvfs f_files; 0 = no fixed inode table).",
    "ovlinspect_filesystem_inodes_free": "Free inodes of that filesystem (statvfs f_favail).",
    "ovlinspect_filesystem_dtype_supported": "1 if readdir on that filesystem fills d_type, 0 if it returns DT_UNKNOWN (xfs ftype=0).",
    "ovlinspect_overlay_mounts": "Overlay mounts seen in this mount namespace.",
    "ovlinspect_overlay_missing_layers": "Layers of live overlay mounts whose directory no longer exists.",
    "ovlinspect_overlay_unresolved_layers": "Layers of live overlay mounts whose path could not be resolved.",
    "ovlinspect_overlay_lower_layers_max": "The largest number of lower layers of any overlay mount.",
    "ovlinspect_overlay_options_bytes_max": "The longest overlay mount option string, in bytes.",
    "ovlinspect_page_size_bytes": "The page size: the limit of legacy mount(2) option data.",
    "ovlinspect_btrfs_verdict_status": "btrfs metadata exhaustion verdict per filesystem (0 ok, 1 warning, 2 critical, 3 unknown).",
    "ovlinspect_orphan_bytes": "Bytes held by layers that no container or image references.",
    "ovlinspect_orphan_layers": "Layers that no container or image references.",
    "ovlinspect_stale_merged_dirs": "merged/ dirs under a runtime's layer home that are not mounted (left by a crash).",
    "ovlinspect_volatile_markers_leftover": "work/incompat/volatile markers of unmounted layers (the next mount fails).",
    "ovlinspect_mountinfo_problems": "mountinfo lines or overlay options that could not be parsed.",
}


def btrfs_metric_name(key: str) -> str:
    """`ovlinspect_btrfs_<key>` with the key reduced to [a-z0-9_] (keys carry their unit)."""
    clean = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in key.lower()).strip("_")
    return f"ovlinspect_btrfs_{clean}"


@dataclass(frozen=True)
class CheckResult:
    id: str
    title: str
    enabled: bool
    status: Status
    summary: str  # one line for --verbose when OK (or why UNKNOWN)
    findings: tuple[Finding, ...] = ()
    metrics: tuple[Metric, ...] = ()
    params: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckReport:
    results: tuple[CheckResult, ...]
    status: Status
    timestamp_seconds: float = 0.0
    duration_seconds: float = 0.0

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f for r in self.results for f in r.findings)


# ---------------------------------------------------------------- registry ---------------------


class SettingError(ValueError):
    """A threshold or switch failed validation; `key` names it (e.g. `warning_percent`)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class Param:
    name: str
    default: float
    minimum: float = 0.0
    maximum: float | None = None
    integer: bool = False
    help: str = ""

    def coerce(self, raw: object) -> float:
        """Validate one value (bool is refused: `true` is not a number)."""
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            if isinstance(raw, str):
                try:
                    raw = float(raw) if not self.integer else int(raw, 0)
                except ValueError:
                    raise SettingError(self.name, f"must be a number, got {raw!r}") from None
            else:
                raise SettingError(self.name, f"must be a number, got {type(raw).__name__} {raw!r}")
        try:
            v = float(raw)  # type: ignore[arg-type]
        except OverflowError:  # an integer too big for a float (TOML integers are unbounded in tomllib)
            v = math.inf
        if math.isnan(v) or math.isinf(v):
            raise SettingError(self.name, f"must be a finite number, got {raw!r}")
        if self.integer and v != int(v):
            raise SettingError(self.name, f"must be a whole number, got {raw!r}")
        if v < self.minimum or (self.maximum is not None and v > self.maximum):
            hi = "" if self.maximum is None else f" and {self.maximum:g}"
            lo = f"between {self.minimum:g}{hi}" if hi else f">= {self.minimum:g}"
            raise SettingError(self.name, f"must be {lo}, got {raw!r}")
        return int(v) if self.integer else v


@dataclass(frozen=True)
class CheckSettings:
    enabled: bool
    params: Mapping[str, float]


Evaluate = Callable[[CheckInputs, Mapping[str, float]], tuple[Status, str, list[Finding], list[Metric]]]


@dataclass(frozen=True)
class Check:
    """A check: stable id, title, thresholds (validated), default switch, and its evaluation."""

    id: str
    title: str
    params: tuple[Param, ...]
    evaluate: Evaluate
    # (lower, higher): lower must not exceed higher, e.g. critical_percent <= warning_percent
    ordered: tuple[tuple[str, str], ...] = ()
    enabled_by_default: bool = True

    def defaults(self) -> CheckSettings:
        return CheckSettings(self.enabled_by_default, {p.name: p.default for p in self.params})

    def settings(self, raw: Mapping[str, object], base: CheckSettings | None = None) -> CheckSettings:
        """Validate a table of settings (`enabled` and the thresholds) over `base` (default: defaults)."""
        base = base or self.defaults()
        enabled = base.enabled
        params = dict(base.params)
        known = {p.name: p for p in self.params}
        for key, value in raw.items():
            if key == "enabled":
                if not isinstance(value, bool):
                    if isinstance(value, str) and value.lower() in ("true", "false", "on", "off", "yes", "no", "1", "0"):
                        value = value.lower() in ("true", "on", "yes", "1")
                    else:
                        raise SettingError("enabled", f"must be true or false, got {value!r}")
                enabled = bool(value)
            elif key in known:
                params[key] = known[key].coerce(value)
            else:
                names = ", ".join(["enabled", *known]) if known else "enabled"
                raise SettingError(key, f"unknown setting for check {self.id} (known: {names})")
        for lo, hi in self.ordered:
            if params[lo] and params[hi] and params[lo] > params[hi]:
                raise SettingError(lo, f"must not be greater than {hi} ({params[lo]:g} > {params[hi]:g})")
        return CheckSettings(enabled, params)


def _pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 100.0


def _fs_labels(fs: FilesystemState) -> dict[str, str]:
    return {"filesystem": fs.mountpoint}


def _fs_metric_labels(fs: FilesystemState) -> tuple[tuple[str, str], ...]:
    return (("filesystem", fs.mountpoint), ("fstype", fs.fstype), ("device", fs.device))


def _holders(fs: FilesystemState, limit: int = 3) -> str:
    h = list(fs.holders[:limit])
    more = f" and {len(fs.holders) - limit} more" if len(fs.holders) > limit else ""
    return ", ".join(h) + more


def _need_filesystems(inp: CheckInputs) -> str | None:
    if inp.filesystems is None:
        return inp.filesystems_error or "the backing filesystems were not gathered"
    return None


def _unknown(reason: str) -> tuple[Status, str, list[Finding], list[Metric]]:
    return Status.UNKNOWN, reason, [], []


def _threshold_status(free_pct: float, warn: float, crit: float) -> Status:
    if crit and free_pct < crit:
        return Status.CRITICAL
    if warn and free_pct < warn:
        return Status.WARNING
    return Status.OK


def _eval_free_space(inp: CheckInputs, p: Mapping[str, float]) -> tuple[Status, str, list[Finding], list[Metric]]:
    why = _need_filesystems(inp)
    if why:
        return _unknown(why)
    assert inp.filesystems is not None
    findings: list[Finding] = []
    metrics: list[Metric] = []
    lowest: tuple[float, str] | None = None
    for fs in inp.filesystems:
        where = f"filesystem {fs.mountpoint} ({fs.fstype} {fs.device})"
        if fs.statvfs_error or fs.size_bytes is None or fs.avail_bytes is None:
            findings.append(Finding("fs_free_space", Status.UNKNOWN, where, f"cannot read free space: {fs.statvfs_error or 'no answer'}",
                                    "check that the filesystem responds (a hung NFS/FUSE mount blocks every writer too)", _fs_labels(fs)))
            continue
        metrics.append(Metric("ovlinspect_filesystem_size_bytes", fs.size_bytes, _fs_metric_labels(fs)))
        metrics.append(Metric("ovlinspect_filesystem_avail_bytes", fs.avail_bytes, _fs_metric_labels(fs)))
        pct = _pct(fs.avail_bytes, fs.size_bytes)
        if lowest is None or pct < lowest[0]:
            lowest = (pct, fs.mountpoint)
        st = _threshold_status(pct, p["warning_percent"], p["critical_percent"])
        if st is not Status.OK:
            limit = p["critical_percent"] if st is Status.CRITICAL else p["warning_percent"]
            findings.append(Finding(
                "fs_free_space", st, where,
                f"{_human(fs.avail_bytes)} of {_human(fs.size_bytes)} free ({pct:.1f}% < {limit:g}%); holds {_holders(fs)}",
                "remove unused images and stopped containers (`docker system prune`, `podman system prune`), "
                "or grow the filesystem", _fs_labels(fs)))
    n = len(inp.filesystems)
    summary = f"{n} filesystem(s)" + (f", lowest free {lowest[0]:.1f}% on {lowest[1]}" if lowest else "")
    return worst(f.status for f in findings), summary, findings, metrics


def _eval_free_inodes(inp: CheckInputs, p: Mapping[str, float]) -> tuple[Status, str, list[Finding], list[Metric]]:
    why = _need_filesystems(inp)
    if why:
        return _unknown(why)
    assert inp.filesystems is not None
    findings: list[Finding] = []
    metrics: list[Metric] = []
    lowest: tuple[float, str] | None = None
    dynamic = 0
    for fs in inp.filesystems:
        where = f"filesystem {fs.mountpoint} ({fs.fstype} {fs.device})"
        if fs.statvfs_error or fs.inodes is None or fs.inodes_free is None:
            findings.append(Finding("fs_free_inodes", Status.UNKNOWN, where, f"cannot read free inodes: {fs.statvfs_error or 'no answer'}",
                                    "check that the filesystem responds", _fs_labels(fs)))
            continue
        metrics.append(Metric("ovlinspect_filesystem_inodes", fs.inodes, _fs_metric_labels(fs)))
        metrics.append(Metric("ovlinspect_filesystem_inodes_free", fs.inodes_free, _fs_metric_labels(fs)))
        if fs.inodes == 0:  # btrfs and friends allocate inodes dynamically: nothing to run out of here
            dynamic += 1
            continue
        pct = _pct(fs.inodes_free, fs.inodes)
        if lowest is None or pct < lowest[0]:
            lowest = (pct, fs.mountpoint)
        st = _threshold_status(pct, p["warning_percent"], p["critical_percent"])
        if st is not Status.OK:
            limit = p["critical_percent"] if st is Status.CRITICAL else p["warning_percent"]
            findings.append(Finding(
                "fs_free_inodes", st, where,
                f"{fs.inodes_free} of {fs.inodes} inodes free ({pct:.1f}% < {limit:g}%): creating files fails with ENOSPC "
                f"while `df` still shows space; holds {_holders(fs)}",
                "delete unused images/containers (many small files), or recreate the filesystem with more inodes "
                "(mkfs.ext4 -i / -N)", _fs_labels(fs)))
    summary = f"{len(inp.filesystems)} filesystem(s)" + (f", lowest free {lowest[0]:.1f}% on {lowest[1]}" if lowest else "")
    if dynamic:
        summary += f", {dynamic} without a fixed inode table"
    return worst(f.status for f in findings), summary, findings, metrics


def _eval_dtype(inp: CheckInputs, p: Mapping[str, float]) -> tuple[Status, str, list[Finding], list[Metric]]:
    why = _need_filesystems(inp)
    if why:
        return _unknown(why)
    assert inp.filesystems is not None
    findings: list[Finding] = []
    metrics: list[Metric] = []
    for fs in inp.filesystems:
        where = f"filesystem {fs.mountpoint} ({fs.fstype} {fs.device})"
        if fs.dtype is None:
            findings.append(Finding("backing_dtype", Status.UNKNOWN, where, f"cannot tell whether readdir fills d_type: {fs.dtype_detail}",
                                    "", _fs_labels(fs)))
            continue
        metrics.append(Metric("ovlinspect_filesystem_dtype_supported", 1 if fs.dtype else 0, _fs_metric_labels(fs)))
        if not fs.dtype:
            fix = ("it is xfs formatted with ftype=0: back it up and recreate it with `mkfs.xfs -n ftype=1`"
                   if fs.fstype == "xfs" else
                   "recreate it with file types in directory entries (ext4: the `filetype` feature; xfs: `-n ftype=1`)")
            findings.append(Finding(
                "backing_dtype", Status.CRITICAL, where,
                f"readdir returns DT_UNKNOWN ({fs.dtype_detail}): overlayfs needs d_type on the upper filesystem "
                f"(whiteouts and opaque dirs misbehave; Docker's overlay2 refuses it); holds {_holders(fs)}",
                fix, _fs_labels(fs)))
    return worst(f.status for f in findings), f"{len(inp.filesystems)} filesystem(s) probed", findings, metrics


def _mount_where(m: OverlayMount) -> str:
    return f"mount {m.entry.mountpoint}"


def _mount_labels(m: OverlayMount) -> dict[str, str]:
    lab = {"mount": m.entry.mountpoint}
    if m.owner is not None:
        lab["runtime"] = m.owner.runtime
    return lab


def _need_mounts(inp: CheckInputs) -> str | None:
    if inp.mounts is None:
        return inp.mounts_error or "the overlay mounts were not gathered"
    return None


_SEV = {Severity.INFO: Status.OK, Severity.WARNING: Status.WARNING, Severity.CRITICAL: Status.CRITICAL}


def _flag_findings(inp: CheckInputs, check_id: str, flag_ids: tuple[str, ...], todo: str) -> list[Finding]:
    out = []
    assert inp.mounts is not None
    for m in inp.mounts:
        for f in m.flags:
            if f.id in flag_ids and _SEV[f.severity] is not Status.OK:
                out.append(Finding(check_id, _SEV[f.severity], _mount_where(m), f.message, todo, _mount_labels(m)))
    return out


def _mount_metrics(inp: CheckInputs) -> list[Metric]:
    assert inp.mounts is not None
    ms = inp.mounts
    return [
        Metric("ovlinspect_overlay_mounts", len(ms)),
        Metric("ovlinspect_overlay_missing_layers", sum(1 for m in ms for la in m.layers if la.exists is False)),
        Metric("ovlinspect_overlay_unresolved_layers", sum(1 for m in ms for la in m.layers if not la.resolved)),
    ]


def _eval_layer_missing(inp: CheckInputs, p: Mapping[str, float]) -> tuple[Status, str, list[Finding], list[Metric]]:
    why = _need_mounts(inp)
    if why:
        return _unknown(why)
    assert inp.mounts is not None
    findings = _flag_findings(
        inp, "layer_missing", ("layer_missing",),
        "stop the container and recreate it from its image (its layer dirs were deleted underneath it); "
        "then look for whoever deletes runtime data (cleanup jobs, manual rm)")
    findings += _flag_findings(
        inp, "layer_missing", ("layer_unresolved",),
        "run `ovlinspect ls --layers` to see how the path was written; a relative path needs the runtime's home")
    missing = sum(1 for m in inp.mounts for la in m.layers if la.exists is False)
    return worst(f.status for f in findings), f"{len(inp.mounts)} overlay mount(s), {missing} missing layer(s)", findings, _mount_metrics(inp)


def _eval_lower_layers(inp: CheckInputs, p: Mapping[str, float]) -> tuple[Status, str, list[Finding], list[Metric]]:
    why = _need_mounts(inp)
    if why:
        return _unknown(why)
    assert inp.mounts is not None
    findings = []
    top = 0
    for m in inp.mounts:
        if m.spec is None:
            continue
        n = len(m.spec.lowerdirs) + len(m.spec.datadirs)
        top = max(top, n)
        st = Status.CRITICAL if p["critical_layers"] and n >= p["critical_layers"] else (
            Status.WARNING if p["warning_layers"] and n >= p["warning_layers"] else Status.OK)
        if st is not Status.OK:
            findings.append(Finding(
                "lower_layers", st, _mount_where(m),
                f"{n} lower layers (threshold {p['critical_layers' if st is Status.CRITICAL else 'warning_layers']:g}; "
                f"Docker refuses images deeper than {DOCKER_MAX_DEPTH}, the kernel stacks at most {KERNEL_MAX_LOWERS})",
                "squash the image (fewer RUN steps, multi-stage build) or rebase it on a flatter base", _mount_labels(m)))
    return (worst(f.status for f in findings), f"deepest stack {top} lower layer(s)", findings,
            [Metric("ovlinspect_overlay_lower_layers_max", top)])


def _eval_options_length(inp: CheckInputs, p: Mapping[str, float]) -> tuple[Status, str, list[Finding], list[Metric]]:
    why = _need_mounts(inp)
    if why:
        return _unknown(why)
    assert inp.mounts is not None
    findings = []
    top = 0
    page = inp.page_size
    for m in inp.mounts:
        n = len(m.entry.super_options_raw.encode("utf-8", "surrogateescape"))
        top = max(top, n)
        pct = 100.0 * n / page
        st = Status.CRITICAL if p["critical_percent"] and pct >= p["critical_percent"] else (
            Status.WARNING if p["warning_percent"] and pct >= p["warning_percent"] else Status.OK)
        if st is not Status.OK:
            findings.append(Finding(
                "mount_options_length", st, _mount_where(m),
                f"option string is {n} bytes ({pct:.0f}% of the {page}-byte page that mount(2) accepts)",
                "fewer layers; runtimes fall back to short relative paths (Docker l/ links) near this limit, "
                "and a longer chain fails to mount", _mount_labels(m)))
    return (worst(f.status for f in findings), f"longest option string {top} bytes of {page}", findings,
            [Metric("ovlinspect_overlay_options_bytes_max", top), Metric("ovlinspect_page_size_bytes", page)])


def _eval_volatile(inp: CheckInputs, p: Mapping[str, float]) -> tuple[Status, str, list[Finding], list[Metric]]:
    why = _need_mounts(inp)
    findings: list[Finding] = []
    metrics: list[Metric] = []
    reasons = []
    if why:
        reasons.append(why)
    else:
        findings += _flag_findings(
            inp, "volatile_marker", ("volatile_marker",),
            "the upper dir may hold half-written data: recreate the container; remove the work dir before the next mount")
    if inp.leftovers is None:
        reasons.append(inp.leftovers_error or "the runtime data roots were not scanned")
    else:
        by_rt: dict[str, int] = {}
        for rt, path in inp.leftovers.volatile_markers:
            by_rt[rt] = by_rt.get(rt, 0) + 1
            findings.append(Finding(
                "volatile_marker", Status.WARNING, f"{rt} layer {path}",
                "volatile marker left by a volatile mount that is gone (crash or unmount): the next overlay mount of "
                "this upper dir fails (the kernel refuses an upper marked incompat/volatile)",
                "remove the container (its upper dir contents may be incomplete), or delete the work dir's work/incompat",
                {"runtime": rt}))
        for rt in sorted(by_rt):
            metrics.append(Metric("ovlinspect_volatile_markers_leftover", by_rt[rt], (("runtime", rt),)))
    st = worst(f.status for f in findings)
    if reasons and st is Status.OK:
        return Status.UNKNOWN, "; ".join(reasons), findings, metrics
    n = len(inp.leftovers.volatile_markers) if inp.leftovers else 0
    return st, f"{n} left-over marker(s)", findings, metrics


def _eval_stale_merged(inp: CheckInputs, p: Mapping[str, float]) -> tuple[Status, str, list[Finding], list[Metric]]:
    if inp.leftovers is None:
        return _unknown(inp.leftovers_error or "the runtime data roots were not scanned")
    findings = []
    by_rt: dict[str, int] = {}
    for rt, path in inp.leftovers.stale_merged:
        by_rt[rt] = by_rt.get(rt, 0) + 1
        findings.append(Finding(
            "stale_merged", Status.WARNING, f"{rt} {path}",
            "merged/ dir exists but nothing is mounted on it: the runtime removes it on a clean unmount, so a crash "
            "or a lost mount left it (the container's filesystem is not what the runtime thinks)",
            "restart the container (or the runtime) so it remounts; if the container is gone, remove it with the runtime",
            {"runtime": rt}))
    metrics = [Metric("ovlinspect_stale_merged_dirs", by_rt.get(rt, 0), (("runtime", rt),)) for rt in sorted(by_rt)]
    return (worst(f.status for f in findings), f"{len(inp.leftovers.stale_merged)} stale merged dir(s) in "
            f"{len(inp.leftovers.roots)} layer home(s)", findings, metrics)


_VERDICT = {"ok": Status.OK, "warning": Status.WARNING, "critical": Status.CRITICAL, "unknown": Status.UNKNOWN}


def _eval_btrfs(inp: CheckInputs, p: Mapping[str, float]) -> tuple[Status, str, list[Finding], list[Metric]]:
    if inp.btrfs is None:
        return _unknown(inp.btrfs_error or "the btrfs analysis did not run")
    findings = []
    metrics = []
    for b in inp.btrfs:
        st = _VERDICT.get(b.verdict.lower(), Status.UNKNOWN)
        labels = (("filesystem", b.filesystem),)
        metrics.append(Metric("ovlinspect_btrfs_verdict_status", int(st), labels))
        for k, v in sorted(b.metrics.items()):
            if isinstance(v, int | float) and not isinstance(v, bool):
                metrics.append(Metric(btrfs_metric_name(k), v, labels))
        if st is not Status.OK:
            findings.append(Finding("btrfs_metadata", st, f"btrfs {b.filesystem}", b.reason,
                                    "; ".join(b.remedies) or "see `ovlinspect btrfs`", {"filesystem": b.filesystem}))
    return worst(f.status for f in findings), f"{len(inp.btrfs)} btrfs filesystem(s)", findings, metrics


def _eval_orphans(inp: CheckInputs, p: Mapping[str, float]) -> tuple[Status, str, list[Finding], list[Metric]]:
    if inp.orphans is None:
        return _unknown(inp.orphans_error or "the orphan analysis did not run")
    findings = []
    metrics = []
    for o in inp.orphans:
        lab = (("runtime", o.runtime),)
        metrics.append(Metric("ovlinspect_orphan_bytes", o.orphan_bytes, lab))
        metrics.append(Metric("ovlinspect_orphan_layers", o.orphan_count, lab))
        st = Status.CRITICAL if p["critical_bytes"] and o.orphan_bytes >= p["critical_bytes"] else (
            Status.WARNING if p["warning_bytes"] and o.orphan_bytes >= p["warning_bytes"] else Status.OK)
        if st is not Status.OK:
            lim = p["critical_bytes" if st is Status.CRITICAL else "warning_bytes"]
            findings.append(Finding(
                "orphan_bytes", st, f"{o.runtime} {o.where}".strip(),
                f"{o.orphan_count} orphaned layer(s) hold {_human(o.orphan_bytes)} (threshold {_human(int(lim))})",
                "review them with `ovlinspect orphans` and remove them with the runtime stopped", {"runtime": o.runtime}))
    total = sum(o.orphan_bytes for o in inp.orphans)
    return worst(f.status for f in findings), f"{_human(total)} in orphaned layers", findings, metrics


def _eval_mountinfo(inp: CheckInputs, p: Mapping[str, float]) -> tuple[Status, str, list[Finding], list[Metric]]:
    why = _need_mounts(inp)
    if why:
        return _unknown(why)
    findings = [
        Finding("mountinfo_problems", Status.UNKNOWN, pr.path or "mountinfo", pr.message,
                "report the line (ovlinspect could not check that mount)")
        for pr in inp.mount_problems
        if pr.kind in ("malformed", "unresolved", "io", "permission", "vanished")
    ]
    return (worst(f.status for f in findings), f"{len(inp.mount_problems)} problem(s) reading mountinfo", findings,
            [Metric("ovlinspect_mountinfo_problems", len(findings))])


def _human(n: int | float) -> str:
    v = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or unit == "TiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} TiB"


_PCT = (0.0, 100.0)
GiB = 1024**3

CHECKS: tuple[Check, ...] = (
    Check("btrfs_metadata", "btrfs metadata exhaustion (ENOSPC while df shows space)", (), _eval_btrfs),
    Check("fs_free_space", "free space of filesystems holding upper dirs or runtime data roots", (
        Param("warning_percent", 10.0, *_PCT, help="WARNING below this % free"),
        Param("critical_percent", 5.0, *_PCT, help="CRITICAL below this % free"),
    ), _eval_free_space, ordered=(("critical_percent", "warning_percent"),)),
    Check("fs_free_inodes", "free inodes of filesystems holding upper dirs or runtime data roots", (
        Param("warning_percent", 10.0, *_PCT, help="WARNING below this % of inodes free"),
        Param("critical_percent", 5.0, *_PCT, help="CRITICAL below this % of inodes free"),
    ), _eval_free_inodes, ordered=(("critical_percent", "warning_percent"),)),
    Check("backing_dtype", "backing filesystems without d_type (xfs ftype=0)", (), _eval_dtype),
    Check("layer_missing", "overlay mounts whose layers are missing or unresolvable", (), _eval_layer_missing),
    Check("lower_layers", "lower layer count near Docker's and the kernel's limits", (
        Param("warning_layers", math.ceil(DOCKER_MAX_DEPTH * NEAR_FRACTION) - 1, 0, KERNEL_MAX_LOWERS, integer=True,
              help="WARNING at this many lower layers (0 = off)"),
        Param("critical_layers", math.ceil(KERNEL_MAX_LOWERS * NEAR_FRACTION), 0, KERNEL_MAX_LOWERS, integer=True,
              help="CRITICAL at this many lower layers (0 = off)"),
    ), _eval_lower_layers, ordered=(("warning_layers", "critical_layers"),)),
    Check("mount_options_length", "overlay option string length near the page-size limit", (
        Param("warning_percent", NEAR_FRACTION * 100, 0, 1000, help="WARNING at this % of the page size (0 = off)"),
        Param("critical_percent", 100.0, 0, 1000, help="CRITICAL at this % of the page size (0 = off)"),
    ), _eval_options_length, ordered=(("warning_percent", "critical_percent"),)),
    Check("orphan_bytes", "bytes in layers no container or image references", (
        Param("warning_bytes", 10 * GiB, 0, integer=True, help="WARNING at this many orphaned bytes per runtime (0 = off)"),
        Param("critical_bytes", 0, 0, integer=True, help="CRITICAL at this many orphaned bytes per runtime (0 = off)"),
    ), _eval_orphans, ordered=(("warning_bytes", "critical_bytes"),)),
    Check("volatile_marker", "left-over overlay `volatile` markers", (), _eval_volatile),
    Check("stale_merged", "stale merged/ dirs of unmounted Docker layers", (), _eval_stale_merged),
    Check("mountinfo_problems", "mountinfo lines or overlay options that could not be parsed", (), _eval_mountinfo),
)

CHECKS_BY_ID: dict[str, Check] = {c.id: c for c in CHECKS}


def default_settings() -> dict[str, CheckSettings]:
    return {c.id: c.defaults() for c in CHECKS}


def run_checks(inputs: CheckInputs, settings: Mapping[str, CheckSettings], only: tuple[str, ...] = ()) -> tuple[CheckResult, ...]:
    """Evaluate every enabled check. A check that raises is UNKNOWN (with the error), never OK."""
    results = []
    for c in CHECKS:
        s = settings.get(c.id, c.defaults())
        enabled = s.enabled and (not only or c.id in only)
        if not enabled:
            results.append(CheckResult(c.id, c.title, False, Status.OK, "disabled", params=dict(s.params)))
            continue
        try:
            st, summary, findings, metrics = c.evaluate(inputs, s.params)
        except Exception as exc:  # a bug in one check must not hide the others
            st, summary, findings, metrics = Status.UNKNOWN, f"check failed: {type(exc).__name__}: {exc}", [], []
        st = worst([st, *(f.status for f in findings)])
        results.append(CheckResult(c.id, c.title, True, st, summary, tuple(findings), tuple(metrics), dict(s.params)))
    return tuple(results)


def make_report(results: tuple[CheckResult, ...], timestamp: float, duration: float) -> CheckReport:
    return CheckReport(results, worst(r.status for r in results if r.enabled), timestamp, duration)
