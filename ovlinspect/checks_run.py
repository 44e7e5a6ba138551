"""Run `ovlinspect check`: gather the inputs (I/O) with per-step deadlines, hold the lock, write
the textfile atomically. The checks themselves are pure (ovlinspect/analysis/checks.py).

Deadlines: every step that touches a filesystem runs in a daemon thread that the run stops waiting
for after `timeout_seconds`; its check then reports UNKNOWN ("no answer within 10s"). A thread stuck
in a hung NFS/FUSE call is abandoned; such waits are killable (TASK_KILLABLE), so the process still
exits. The lock (flock, non-blocking) keeps cron from stacking up runs behind a hung filesystem.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import posixpath
import stat
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ovlinspect.analysis.checks import (
    BtrfsState,
    CheckInputs,
    CheckReport,
    FilesystemState,
    LeftoverScan,
    OrphanTotal,
    make_report,
    run_checks,
)
from ovlinspect.config import DEFAULT_DATA_ROOTS, CheckConfig, default_lock_file
from ovlinspect.errors import EXIT_INCOMPLETE, OvlinspectError
from ovlinspect.hostfs import HostRoots
from ovlinspect.model import MountEntry, OverlayMount

T = TypeVar("T")


class CheckLockedError(OvlinspectError):
    """Another run holds the lock: UNKNOWN (3), the monitoring convention for "could not check"."""

    exit_code = EXIT_INCOMPLETE


# ------------------------------------------------------------------ deadlines -------------------


def call_with_deadline(fn: Callable[[], T], timeout: float, what: str) -> tuple[T | None, str | None]:
    """Run fn in a daemon thread; (value, None), or (None, why) on timeout or error."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # reported, not raised: the check becomes UNKNOWN
            box["error"] = exc

    t = threading.Thread(target=target, name=f"ovlinspect-{what}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return None, f"{what}: no answer within {timeout:g}s (a hung filesystem?)"
    if "error" in box:
        return None, f"{what}: {_describe(box['error'])}"
    return box["value"], None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OvlinspectError):
        return exc.message
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    return f"{type(exc).__name__}: {exc}"


def run_parallel(jobs: dict[str, Callable[[], T]], timeout: float) -> dict[str, tuple[T | None, str | None]]:
    """Run independent jobs in daemon threads under one shared deadline."""
    boxes: dict[str, dict[str, Any]] = {}
    threads: dict[str, threading.Thread] = {}
    for key, fn in jobs.items():
        box: dict[str, Any] = {}
        boxes[key] = box

        def target(fn: Callable[[], T] = fn, box: dict[str, Any] = box) -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:
                box["error"] = exc

        threads[key] = threading.Thread(target=target, name=f"ovlinspect-{key[:40]}", daemon=True)
        threads[key].start()
    end = time.monotonic() + timeout
    out: dict[str, tuple[T | None, str | None]] = {}
    for key, t in threads.items():
        t.join(max(0.0, end - time.monotonic()))
        if t.is_alive():
            out[key] = (None, f"no answer within {timeout:g}s (a hung filesystem?)")
        elif "error" in boxes[key]:
            out[key] = (None, _describe(boxes[key]["error"]))
        else:
            out[key] = (boxes[key]["value"], None)
    return out


# ------------------------------------------------------------------ lock ------------------------


@contextlib.contextmanager
def check_lock(path: str | None) -> Iterator[str]:
    """Hold an exclusive flock on `path` for the run; a second run fails at once (exit 3)."""
    p = path or default_lock_file()
    try:
        os.makedirs(os.path.dirname(p) or "/", mode=0o755, exist_ok=True)
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise CheckLockedError(f"cannot open the lock file {p}: {exc.strerror or exc}", hint="give a writable path to --lock") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise CheckLockedError(f"cannot lock {p}: {exc.strerror or exc}") from None
            try:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            except OSError:
                holder = ""
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise CheckLockedError(
                f"another `ovlinspect check` is still running{who}: lock {p} is held",
                hint="a run that does not finish usually waits on a hung filesystem; lower --timeout or find the stuck mount",
            ) from None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield p
    finally:
        os.close(fd)


# ------------------------------------------------------------------ gathering -------------------


def backing_entry(path: str, entries: list[MountEntry], _index: dict[str, MountEntry] | None = None) -> MountEntry | None:
    """The mount a path lives on: the longest mount point prefix (the last one mounted wins). Pure.

    O(path depth) with a prebuilt `_index` (mount_index), so thousands of upper dirs stay cheap."""
    idx = _index if _index is not None else mount_index(entries)
    p = posixpath.normpath(path) if path.startswith("/") else path
    while True:
        e = idx.get(p)
        if e is not None:
            return e
        if p in ("/", ""):
            return None
        p = posixpath.dirname(p)


def mount_index(entries: list[MountEntry]) -> dict[str, MountEntry]:
    """mount point -> the entry mounted last on it (mountinfo lists mounts in mount order)."""
    idx: dict[str, MountEntry] = {}
    for e in entries:
        idx[e.mountpoint.rstrip("/") or "/"] = e
    return idx


# getdents64 numbers (arch/*/syscall tables); d_type is the byte after d_reclen in linux_dirent64.
_GETDENTS64 = {"x86_64": 217, "aarch64": 61, "riscv64": 61, "ppc64le": 202, "ppc64": 202, "s390x": 220, "loongarch64": 61}
DT_UNKNOWN = 0


def read_dtypes(path: str, limit: int = 64) -> list[tuple[bytes, int]]:
    """(name, d_type) of up to `limit` entries of a directory, "." and ".." excluded (I/O).

    Opened with O_NOFOLLOW|O_DIRECTORY: never follows a symlink. This is how Docker's overlay2
    tells xfs ftype=0 (moby pkg/fsutils SupportsDType: a DT_UNKNOWN entry means no d_type),
    except that we read an existing directory instead of creating a test file.
    """
    import ctypes
    import platform
    import struct

    nr = _GETDENTS64.get(platform.machine())
    if nr is None:
        raise OSError(errno.ENOSYS, f"getdents64 number unknown on {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    out: list[tuple[bytes, int]] = []
    try:
        buf = ctypes.create_string_buffer(32768)
        while len(out) < limit:
            n = libc.syscall(nr, fd, buf, len(buf))
            if n < 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e), path)
            if n == 0:
                break
            data = buf.raw[:n]
            off = 0
            while off < n:
                _ino, _doff, reclen, dtype = struct.unpack_from("=QqHB", data, off)
                name = data[off + 19 : off + reclen].split(b"\0", 1)[0]
                if name not in (b".", b".."):
                    out.append((name, dtype))
                off += reclen
    finally:
        os.close(fd)
    return out[:limit]


def probe_dtype(candidates: list[str]) -> tuple[bool | None, str]:
    """Whether readdir fills d_type, judged on the first candidate dir that has entries."""
    tried = []
    for d in candidates:
        try:
            ents = read_dtypes(d)
        except OSError as exc:
            tried.append(f"{d}: {exc.strerror or exc}")
            continue
        if not ents:
            tried.append(f"{d}: empty")
            continue
        unknown = sum(1 for _, t in ents if t == DT_UNKNOWN)
        if unknown:
            return False, f"{unknown} of {len(ents)} entries of {d} have DT_UNKNOWN"
        return True, f"{len(ents)} entries of {d} have a d_type"
    return None, "no directory with entries to read (" + "; ".join(tried[:3]) + ")"


def _probe_fs(statvfs_path: str, dtype_dirs: list[str]) -> tuple[os.statvfs_result, bool | None, str]:
    st = os.statvfs(statvfs_path)
    dt, detail = probe_dtype(dtype_dirs)
    return st, dt, detail


def _resolve_root(path: str) -> str | None:
    """realpath of a data root / watched path, or None when it does not exist."""
    rp = os.path.realpath(path)
    return rp if os.path.isdir(rp) else None


def gather_filesystems(
    mounts: list[OverlayMount], entries: list[MountEntry], cfg: CheckConfig, data_roots: list[str]
) -> tuple[tuple[FilesystemState, ...], list[str]]:
    """statvfs and d_type of every filesystem holding an upper dir, a data root or a watched path."""
    problems: list[str] = []
    holders: dict[str, list[tuple[str, str]]] = {}  # mount key -> [(path, what)]
    ents: dict[str, MountEntry] = {}
    index = mount_index(entries)

    def add(path: str, what: str) -> None:
        e = backing_entry(path, entries, index)
        if e is None:
            problems.append(f"{path}: no mount holds it")
            return
        key = f"{e.mount_id}"
        ents[key] = e
        holders.setdefault(key, []).append((path, what))

    for m in mounts:
        up = m.upper
        if up is not None and up.resolved and up.exists is not False and up.path.startswith("/"):
            add(up.path, f"upperdir of {m.entry.mountpoint}")
    roots = list(dict.fromkeys([*data_roots, *cfg.paths]))
    resolve_jobs: dict[str, Callable[[], str | None]] = {r: functools.partial(_resolve_root, r) for r in roots}
    resolved = run_parallel(resolve_jobs, cfg.timeout_seconds)
    for r in roots:
        rp, err = resolved[r]
        if err is not None:
            add(r, f"{'data root' if r in data_roots else 'path'} {r} ({err})")
        elif rp is not None:
            add(rp, f"data root {r}" if r in data_roots else f"path {r}")
    jobs: dict[str, Callable[[], tuple[os.statvfs_result, bool | None, str]]] = {}
    for key, hs in holders.items():
        e = ents[key]
        dirs = list(dict.fromkeys([p for p, _ in hs[:8]] + [posixpath.dirname(p) for p, _ in hs[:4]] + [e.mountpoint]))
        jobs[key] = functools.partial(_probe_fs, hs[0][0], dirs)
    answers = run_parallel(jobs, cfg.timeout_seconds)
    out = []
    for key, hs in holders.items():
        e = ents[key]
        val, err = answers[key]
        what = tuple(dict.fromkeys(w for _, w in hs))
        if val is None:
            out.append(FilesystemState(e.mountpoint, e.fstype, e.source, what, statvfs_error=err,
                                       dtype_detail=f"not probed: {err}"))
            continue
        st, dt, detail = val
        out.append(FilesystemState(
            e.mountpoint, e.fstype, e.source, what,
            size_bytes=st.f_blocks * st.f_frsize, avail_bytes=st.f_bavail * st.f_frsize,
            inodes=st.f_files, inodes_free=st.f_favail, dtype=dt, dtype_detail=detail))
    out.sort(key=lambda f: f.mountpoint)
    return tuple(out), problems


# Where each runtime keeps its overlay layer dirs under its data root, and whether a merged/ dir
# that is not a mount point is stale. moby daemon/graphdriver/overlay2 (Put): after unmount the
# driver rmdir()s <home>/<id>/merged, so a merged/ dir without a mount is a left-over of a crash.
# containers/storage and containerd keep or place their mount points differently: only their
# volatile markers are scanned.
LAYER_HOMES = (
    ("docker", "overlay2", True),
    ("containers-storage", "overlay", False),
    ("containerd", "io.containerd.snapshotter.v1.overlayfs/snapshots", False),
)


def scan_leftovers(
    data_roots: list[str],
    mounts: list[OverlayMount],
    entries: list[MountEntry],
    other_namespaces: Callable[[], tuple[set[str], set[str]]] | None = None,
) -> LeftoverScan:
    """Stale merged/ dirs and volatile markers of unmounted layers (lstat and scandir only).

    A candidate is confirmed against this namespace first, then (lazily, only when there is a
    candidate) against every mount namespace: a daemon may run with its own (MountFlags=slave).
    `other_namespaces` returns (mount points, overlay workdirs) of all namespaces.
    """
    mounted = {e.mountpoint for e in entries}
    live_work = {m.workdir for m in mounts if m.workdir}
    stale: list[tuple[str, str]] = []
    markers: list[tuple[str, str]] = []
    homes: list[str] = []
    for root in data_roots:
        for runtime, sub, merged_is_transient in LAYER_HOMES:
            home = os.path.join(root, sub)
            try:
                it = os.scandir(home)
            except (FileNotFoundError, NotADirectoryError):
                continue
            homes.append(home)
            with it:
                for ent in it:
                    if not ent.is_dir(follow_symlinks=False) or ent.name == "l":
                        continue
                    layer = ent.path
                    if merged_is_transient:
                        merged = os.path.join(layer, "merged")
                        if _is_dir(merged) and merged not in mounted:
                            stale.append((runtime, merged))
                    work = os.path.join(layer, "work")
                    # fs/overlayfs/super.c: the volatile marker is <workdir>/work/incompat/volatile
                    marker = os.path.join(work, "work", "incompat", "volatile")
                    if work not in live_work and _exists(marker):
                        markers.append((runtime, marker))
    if (stale or markers) and other_namespaces is not None:
        all_mps, all_work = other_namespaces()
        stale = [(rt, p) for rt, p in stale if p not in all_mps]
        markers = [(rt, p) for rt, p in markers if posixpath.dirname(posixpath.dirname(posixpath.dirname(p))) not in all_work]
    return LeftoverScan(tuple(stale), tuple(markers), tuple(homes))


def _all_namespaces_loader(roots: HostRoots) -> Callable[[], tuple[set[str], set[str]]]:
    """(mount points, overlay workdirs) of every mount namespace (hostfs reads, no owners)."""

    def load() -> tuple[set[str], set[str]]:
        from ovlinspect import hostfs
        from ovlinspect.analysis.mounts import assess_or_problem, is_overlay
        from ovlinspect.mountinfo import parse_mountinfo

        params = hostfs.read_module_params(roots)
        probe = hostfs.HostProbe(enabled=True)
        mps: set[str] = set()
        work: set[str] = set()
        for _ns, pids in hostfs.scan_mount_namespaces(roots).namespaces:
            data, _pid, _prob = hostfs.read_namespace_mountinfo(roots, pids)
            if data is None:
                continue
            entries, _ = parse_mountinfo(data)
            for e in entries:
                mps.add(e.mountpoint)
                if is_overlay(e):
                    m, _ = assess_or_problem(e, probe, params)
                    if m is not None and m.workdir:
                        work.add(m.workdir)
        return mps, work

    return load


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _exists(path: str) -> bool:
    try:
        os.lstat(path)
        return True
    except OSError:
        return False


def gather_btrfs(roots: HostRoots, cfg: CheckConfig, data_roots: list[str]) -> tuple[tuple[BtrfsState, ...] | None, str | None]:
    """btrfs metadata verdicts (ovlinspect.btrfs_sysfs.inspect_btrfs) of the filesystems backing
    the data roots and watched paths, or why they are missing."""
    try:
        from ovlinspect.btrfs_sysfs import inspect_btrfs  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None, "the btrfs analysis (ovlinspect.btrfs_sysfs) is not part of this build"
    roots_list = list(dict.fromkeys([*data_roots, *cfg.paths]))
    val, err = call_with_deadline(lambda: inspect_btrfs(roots, data_roots=roots_list), cfg.timeout_seconds, "btrfs analysis")
    if err is not None:
        return None, err
    reports = val[0] if isinstance(val, tuple) else val
    out = []
    for r in reports or ():
        mps = getattr(r, "mountpoints", None) or ()
        name = getattr(r, "mountpoint", None) or (mps[0] if mps else None) or getattr(r, "fsid", None) or "?"
        metrics = getattr(r, "metrics", None) or {}
        out.append(BtrfsState(str(name), str(getattr(r, "verdict", "unknown")), str(getattr(r, "reason", "")),
                              tuple(str(x) for x in (getattr(r, "remedies", None) or ())),
                              {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}))
    return tuple(out), None


def gather_orphans(roots: HostRoots, cfg: CheckConfig) -> tuple[tuple[OrphanTotal, ...] | None, str | None]:
    """Orphaned layer bytes per runtime (ovlinspect.runtimes.find_orphans: only dirs proven
    unreferenced count, never the "unknown" ones), or why they are missing."""
    try:
        from ovlinspect.runtimes import find_orphans
    except ImportError:
        return None, "the orphan analysis (ovlinspect.runtimes.find_orphans) is not part of this build"
    pinned = list(cfg.data_roots) if cfg.data_roots is not None else None

    def run() -> Any:
        return find_orphans(_pin_runtime_roots(roots, pinned) if pinned is not None else roots)

    val, err = call_with_deadline(run, cfg.timeout_seconds, "orphan analysis")
    if err is not None or val is None:
        return None, err
    report = val[0]
    totals: dict[str, list[int]] = {rt: [0, 0] for rt, _root in report.roots}
    for o in report.orphans:
        t = totals.setdefault(o.runtime, [0, 0])
        t[0] += o.size_bytes or 0
        t[1] += 1
    return tuple(OrphanTotal(rt, b, n) for rt, (b, n) in sorted(totals.items())), None


def _pin_runtime_roots(roots: HostRoots, data_roots: list[str]) -> HostRoots:
    """HostRoots whose runtime discovery is pinned to the configured data roots, each assigned to
    its runtime by its layout (Docker: overlay2/ or image/; containers/storage: overlay-layers/ or
    storage.lock; containerd: io.containerd.*)."""
    import dataclasses

    from ovlinspect.runtimes.discovery import RootOverrides

    docker, podman, ctd = [], [], []
    for r in data_roots:
        try:
            names = set(os.listdir(r))
        except OSError:
            continue
        if names & {"overlay2", "image"}:
            docker.append(r)
        elif names & {"overlay-layers", "storage.lock", "overlay-images"}:
            podman.append(r)
        elif any(n.startswith("io.containerd.") for n in names):
            ctd.append(r)
    return dataclasses.replace(roots, runtime_overrides=RootOverrides(tuple(docker), tuple(podman), tuple(ctd)))


def discover_data_roots(roots: HostRoots, cfg: CheckConfig) -> list[str]:
    """The configured data roots, else the runtimes' (ovlinspect.runtimes discovery: running
    daemons, their config files, the defaults); the defaults when discovery fails."""
    if cfg.data_roots is not None:
        return list(cfg.data_roots)

    def discover() -> list[str]:
        from ovlinspect.runtimes import runtime_roots

        rr = runtime_roots(roots)
        found = [f.path for f in (*rr.docker, *rr.podman, *rr.containerd)]
        found += [f.snapshotter_root for f in rr.containerd if f.snapshotter_root]
        return list(dict.fromkeys(found))

    val, _err = call_with_deadline(discover, cfg.timeout_seconds, "discovering the runtime data roots")
    return val if val is not None else list(DEFAULT_DATA_ROOTS)


# What each check reads: inputs no enabled check needs are not gathered at all (`--only`).
NEEDS = {
    "mounts": {"layer_missing", "lower_layers", "mount_options_length", "volatile_marker", "mountinfo_problems",
               "fs_free_space", "fs_free_inodes", "backing_dtype", "stale_merged"},
    "filesystems": {"fs_free_space", "fs_free_inodes", "backing_dtype"},
    "leftovers": {"volatile_marker", "stale_merged"},
    "btrfs": {"btrfs_metadata"},
    "orphans": {"orphan_bytes"},
}
NOT_NEEDED = "not gathered: no enabled check needs it"


def gather_inputs(roots: HostRoots, cfg: CheckConfig, enabled: set[str] | None = None) -> CheckInputs:
    """What the enabled checks need (default: everything), each step under its deadline."""
    from ovlinspect.inventory import collect_mounts

    def need(what: str) -> bool:
        return enabled is None or bool(NEEDS[what] & enabled)

    timeout = cfg.timeout_seconds
    try:
        page = os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        page = 4096
    fields: dict[str, Any] = {"page_size": page}
    replay_why = "not checked when replaying --mountinfo (the filesystems are on another host)"
    data_roots: list[str] = []
    if not roots.replay and (need("filesystems") or need("leftovers") or need("btrfs")):
        data_roots = discover_data_roots(roots, cfg)
    if not need("mounts"):
        fields.update(mounts_error=NOT_NEEDED, filesystems_error=NOT_NEEDED, leftovers_error=NOT_NEEDED)
    else:
        inv, inv_err = call_with_deadline(lambda: collect_mounts(roots), timeout, "reading the overlay mounts")
        if inv is None:
            why = inv_err or "mountinfo unavailable"
            fields.update(mounts_error=why, filesystems_error=why, leftovers_error=why)
        else:
            mounts = list(inv.mounts)
            entries = inv.all_entries.get("", []) or next(iter(inv.all_entries.values()), [])
            fields.update(mounts=tuple(mounts), mount_problems=tuple(inv.problems))
            if roots.replay:
                fields.update(filesystems_error=replay_why, leftovers_error=replay_why)
            else:
                if need("filesystems"):
                    fields["filesystems"], _probs = gather_filesystems(mounts, entries, cfg, data_roots)
                else:
                    fields["filesystems_error"] = NOT_NEEDED
                if need("leftovers"):
                    lo, lo_err = call_with_deadline(
                        lambda: scan_leftovers(data_roots, mounts, entries, _all_namespaces_loader(roots)), timeout,
                        "scanning the runtime data roots")
                    fields.update(leftovers=lo, leftovers_error=lo_err)
                else:
                    fields["leftovers_error"] = NOT_NEEDED
    if roots.replay:
        fields.update(btrfs_error=replay_why, orphans_error=replay_why)
    else:
        if need("btrfs"):
            fields["btrfs"], fields["btrfs_error"] = gather_btrfs(roots, cfg, data_roots)
        else:
            fields["btrfs_error"] = NOT_NEEDED
        if need("orphans"):
            fields["orphans"], fields["orphans_error"] = gather_orphans(roots, cfg)
        else:
            fields["orphans_error"] = NOT_NEEDED
    return CheckInputs(**fields)


def run_check(roots: HostRoots, cfg: CheckConfig, only: tuple[str, ...] = ()) -> CheckReport:
    """Gather what the enabled checks need, evaluate, time the whole run."""
    t0 = time.monotonic()
    ts = time.time()
    enabled = {cid for cid, s in cfg.checks.items() if s.enabled and (not only or cid in only)}
    inputs = gather_inputs(roots, cfg, enabled)
    results = run_checks(inputs, cfg.checks, only)
    return make_report(results, ts, time.monotonic() - t0)


def write_textfile(path: str, data: str) -> None:
    """Write atomically for node_exporter's textfile collector: temp file in the same dir (not
    ending in .prom, so the collector never reads it), fsync, rename over, fsync the dir."""
    import tempfile

    d = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    tmp = ""
    try:
        # O_EXCL with a random name: never clobbers or follows anything already there
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=d)
        try:
            os.fchmod(fd, 0o644)
            view = memoryview(data.encode("utf-8"))
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise OvlinspectError(f"cannot write the textfile {path}: {exc.strerror or exc}",
                              hint="the directory must exist and be writable (node_exporter's --collector.textfile.directory)") from None
