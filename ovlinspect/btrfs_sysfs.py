"""Read btrfs state for the metadata verdict (I/O): /sys/fs/btrfs/<FSID>/, statvfs, capture/replay.

Live: every readable attribute under /sys/fs/btrfs/<FSID>/ (symlinks not followed), os.statvfs of
a mount point, and per-device sizes from BTRFS_IOC_DEV_INFO (read-only, unprivileged; only used to
refine multi-device answers — the verdict needs no ioctl and no root). A missing attribute is
None later on, never a crash.

Capture layout (`--capture DIR`), one directory per filesystem:
  DIR/<FSID>/sysfs/<relative path>   one file per attribute, content as read
  DIR/<FSID>/sysfs.json              {"fsid", "attrs": {relative path: content}}
  DIR/<FSID>/statvfs.json            os.statvfs fields of the mount point, plus "mountpoint"
  DIR/<FSID>/devices.json            [{"devid", "path", "total_bytes", "used_bytes"}] (when known)
  DIR/<FSID>/context.json            {"mountpoints", "docker_roots", "subvolume_count"}
`--replay DIR` reads one such directory, or a folder of them.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import struct
from collections.abc import Iterable

from ovlinspect.analysis.btrfs import BtrfsDevice, BtrfsInputs, BtrfsReport, assess_btrfs
from ovlinspect.errors import InputError, NotFoundError, OvlinspectError, Problem, UsageError, error_from_oserror
from ovlinspect.hostfs import HostRoots
from ovlinspect.model import MountEntry

MAX_ATTR_BYTES = 64 * 1024
MAX_ATTRS = 5000
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
STATVFS_FIELDS = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_namemax")
# Container data roots whose backing filesystem we look at by default (moby defaultDataRoot,
# containers/storage graphroot, containerd defaults.DefaultRootDir).
DEFAULT_DATA_ROOTS = ("/var/lib/docker", "/var/lib/containers/storage", "/var/lib/containerd")
# A btrfs subvolume's root directory has inode number BTRFS_FIRST_FREE_OBJECTID (256) (ctree.h).
BTRFS_FIRST_FREE_OBJECTID = 256

# include/uapi/linux/btrfs.h: BTRFS_IOCTL_MAGIC 0x94;
# BTRFS_IOC_FS_INFO = _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args)   (1024 bytes)
# BTRFS_IOC_DEV_INFO = _IOWR(0x94, 30, struct btrfs_ioctl_dev_info_args) (4096 bytes)
_IOC_READ, _IOC_WRITE = 2, 1
BTRFS_IOC_FS_INFO = (_IOC_READ << 30) | (1024 << 16) | (0x94 << 8) | 31
BTRFS_IOC_DEV_INFO = ((_IOC_READ | _IOC_WRITE) << 30) | (4096 << 16) | (0x94 << 8) | 30


# ---------------------------------------------------------------------------------------------
# sysfs
def read_sysfs_tree(base: str) -> dict[str, str]:
    """Every readable regular file under `base`, by relative path; symlinks are not followed."""
    attrs: dict[str, str] = {}
    stack = [""]
    while stack and len(attrs) < MAX_ATTRS:
        rel = stack.pop()
        try:
            with os.scandir(os.path.join(base, rel) if rel else base) as it:
                entries = list(it)
        except OSError:
            continue
        for e in sorted(entries, key=lambda x: x.name):
            r = f"{rel}/{e.name}" if rel else e.name
            try:
                if e.is_symlink():
                    continue
                if e.is_dir(follow_symlinks=False):
                    stack.append(r)
                    continue
                if not e.is_file(follow_symlinks=False):
                    continue
                fd = os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                try:
                    data = os.read(fd, MAX_ATTR_BYTES)
                finally:
                    os.close(fd)
            except OSError:
                continue  # write-only or unreadable attribute: not part of the state
            attrs[r] = data.decode("utf-8", "replace")
    return attrs


def list_fsids(roots: HostRoots) -> list[str]:
    """FSIDs of the mounted btrfs filesystems (the UUID-named dirs of /sys/fs/btrfs)."""
    try:
        return sorted(n for n in os.listdir(roots.sys("fs", "btrfs")) if UUID_RE.match(n))
    except OSError:
        return []


def _device_map(roots: HostRoots, fsids: Iterable[str]) -> dict[str, str]:
    """{"maj:min" or device name: fsid} from /sys/fs/btrfs/<FSID>/devices/<name>/dev."""
    out: dict[str, str] = {}
    for fsid in fsids:
        base = roots.sys("fs", "btrfs", fsid, "devices")
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in names:
            out[name] = fsid
            try:
                with open(os.path.join(base, name, "dev")) as fh:  # host sysfs, not a layer
                    out[fh.read(64).strip()] = fsid
            except OSError:
                pass
    return out


def read_statvfs(path: str) -> dict[str, int]:
    st = os.statvfs(path)
    return {f: int(getattr(st, f)) for f in STATVFS_FIELDS}


# ---------------------------------------------------------------------------------------------
# ioctls (read-only, no capability needed): fsid of a path, per-device sizes
def _open_dir(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def fs_info(path: str) -> tuple[str, int, int] | None:
    """(fsid, max_id, num_devices) of the btrfs holding `path`, or None when it is not btrfs."""
    try:
        fd = _open_dir(path)
    except OSError:
        return None
    try:
        buf = bytearray(1024)
        fcntl.ioctl(fd, BTRFS_IOC_FS_INFO, buf)
    except OSError:
        return None
    finally:
        os.close(fd)
    max_id, num_devices = struct.unpack_from("<QQ", buf, 0)
    raw = bytes(buf[16:32]).hex()
    fsid = f"{raw[0:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:32]}"
    return fsid, max_id, num_devices


def read_dev_info(mountpoint: str, devids: Iterable[int]) -> tuple[BtrfsDevice, ...] | None:
    """Per-device size and allocation (BTRFS_IOC_DEV_INFO); None when unavailable."""
    try:
        fd = _open_dir(mountpoint)
    except OSError:
        return None
    out = []
    try:
        for devid in devids:
            buf = bytearray(4096)
            struct.pack_into("<Q", buf, 0, devid)
            try:
                fcntl.ioctl(fd, BTRFS_IOC_DEV_INFO, buf)
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    continue
                return None
            _, used, total = struct.unpack_from("<Q16xQQ", buf, 0)
            path = bytes(buf[3072:4096]).split(b"\0", 1)[0].decode("utf-8", "replace") or None
            out.append(BtrfsDevice(devid=devid, path=path, total_bytes=total, used_bytes=used))
    finally:
        os.close(fd)
    return tuple(out) if out else None


# ---------------------------------------------------------------------------------------------
# mounts and container data roots
def _read_entries(roots: HostRoots, problems: list[Problem]) -> list[MountEntry]:
    """Every mount of this namespace (an unreadable mountinfo only narrows the search)."""
    from ovlinspect.hostfs import read_mountinfo
    from ovlinspect.mountinfo import parse_mountinfo

    try:
        entries, probs = parse_mountinfo(read_mountinfo(roots))
    except OvlinspectError as exc:
        problems.append(Problem("io", f"cannot read mountinfo: {exc.message}"))
        return []
    problems.extend(probs)
    return entries


def _overlay_uppers(entries: list[MountEntry], problems: list[Problem]) -> list[str]:
    """Absolute upper dirs of the overlay mounts (overlay2 on a btrfs backing filesystem)."""
    from ovlinspect.overlayopts import parse_overlay_options

    out = []
    for e in entries:
        if e.fstype != "overlay":
            continue
        try:
            spec = parse_overlay_options(e.super_options_raw)
        except OvlinspectError as exc:
            problems.append(Problem("malformed", exc.message, e.mountpoint, e.line_number))
            continue
        if spec.upperdir is not None and os.path.isabs(spec.upperdir.path):
            out.append(spec.upperdir.path)
    return out


def _mount_fsid(mountpoint: str, source: str, devmap: dict[str, str]) -> str | None:
    for key in (source, os.path.realpath(source) if source.startswith("/") else source):
        name = os.path.basename(key)
        if name in devmap:
            return devmap[name]
    try:
        st = os.stat(source)
        key = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        if key in devmap:
            return devmap[key]
    except OSError:
        pass
    info = fs_info(mountpoint)
    return info[0] if info else None


def _longest_mount(path: str, mounts: list[tuple[str, str]]) -> tuple[str, str] | None:
    """The (mountpoint, fsid) whose mount point is the longest prefix of `path`."""
    best = None
    for mp, fsid in mounts:
        if path == mp or path.startswith(mp.rstrip("/") + "/") or mp == "/":
            if best is None or len(mp) > len(best[0]):
                best = (mp, fsid)
    return best


def count_layer_subvolumes(data_root: str) -> int | None:
    """Subvolumes under <data-root>/btrfs/subvolumes (Docker's and containers/storage's btrfs
    driver: one subvolume per layer); None when the dir does not exist. lstat only."""
    base = os.path.join(data_root, "btrfs", "subvolumes")
    try:
        with os.scandir(base) as it:
            entries = [e for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return None
    n = 0
    for e in entries:
        # readdir's d_ino of a subvolume entry is the subvolume id; lstat gives its root inode
        try:
            if os.lstat(e.path).st_ino == BTRFS_FIRST_FREE_OBJECTID:
                n += 1
        except OSError:
            continue
    return n


def _candidate_roots(entries: list[MountEntry], data_roots: Iterable[str] | None, problems: list[Problem]) -> list[str]:
    cands = list(data_roots) if data_roots is not None else list(DEFAULT_DATA_ROOTS)
    if data_roots is None:
        cands += _overlay_uppers(entries, problems)
    seen: list[str] = []
    for c in cands:
        if os.path.isdir(c):
            r = os.path.realpath(c)
            if r not in seen:
                seen.append(r)
    return seen


# ---------------------------------------------------------------------------------------------
# live inspection
def read_inputs(roots: HostRoots, fsid: str, mountpoints: list[str], docker_roots: list[str]) -> BtrfsInputs:
    """Read one filesystem's inputs (sysfs, statvfs, per-device sizes) live."""
    attrs = read_sysfs_tree(roots.sys("fs", "btrfs", fsid))
    statvfs = None
    devices = None
    for mp in mountpoints:
        try:
            statvfs = read_statvfs(mp)
            statvfs["mountpoint"] = mp  # type: ignore[assignment]
        except OSError:
            continue
        devids = sorted({int(k.split("/")[1]) for k in attrs if k.startswith("devinfo/") and k.split("/")[1].isdigit()})
        if not devids:
            info = fs_info(mp)
            devids = list(range(1, info[1] + 1)) if info else []
        devices = read_dev_info(mp, devids)
        break
    counts = [c for c in (count_layer_subvolumes(r) for r in docker_roots) if c is not None]
    return BtrfsInputs(
        fsid=fsid,
        attrs=attrs,
        statvfs={k: v for k, v in statvfs.items() if k != "mountpoint"} if statvfs else None,
        devices=devices,
        mountpoints=tuple(mountpoints),
        docker_roots=tuple(docker_roots),
        subvolume_count=sum(counts) if counts else None,
    )


def gather_live(
    roots: HostRoots,
    paths: list[str] | None = None,
    all_fs: bool = False,
    data_roots: Iterable[str] | None = None,
) -> tuple[list[BtrfsInputs], list[Problem]]:
    """Inputs of the filesystems asked for: PATHs, --all, or those backing container data roots."""
    problems: list[Problem] = []
    fsids = list_fsids(roots)
    devmap = _device_map(roots, fsids)
    entries = _read_entries(roots, problems)
    mounts: list[tuple[str, str]] = []
    for e in entries:
        if e.fstype != "btrfs":
            continue
        mp, source = e.mountpoint, e.source
        f = _mount_fsid(mp, source, devmap)
        if f:
            mounts.append((mp, f))
    mps_of: dict[str, list[str]] = {}
    for mp, f in mounts:
        mps_of.setdefault(f, []).append(mp)

    wanted: list[str] = []
    extra_roots: dict[str, list[str]] = {}
    if paths:
        for p in paths:
            try:
                os.stat(p)
            except OSError as exc:
                raise error_from_oserror(exc, p, "inspect") from None
            rp = os.path.realpath(p)
            hit = _longest_mount(rp, mounts)
            f = hit[1] if hit else None
            info = fs_info(rp if os.path.isdir(rp) else os.path.dirname(rp))
            if info:
                f = info[0]
                if rp not in mps_of.get(f, []) and not mps_of.get(f):
                    mps_of.setdefault(f, []).append(rp)
            if not f:
                raise NotFoundError(f"{p} is not on a btrfs filesystem", hint="give a path on a mounted btrfs", path=p)
            if f not in wanted:
                wanted.append(f)
            if count_layer_subvolumes(rp) is not None:
                extra_roots.setdefault(f, []).append(rp)
    elif all_fs:
        wanted = [f for f in fsids]
    data_root_fs: dict[str, list[str]] = {}
    for r in _candidate_roots(entries, data_roots, problems):
        hit = _longest_mount(r, mounts)
        f = hit[1] if hit else None
        if f is None:
            info = fs_info(r)
            f = info[0] if info else None
        if f:
            data_root_fs.setdefault(f, []).append(r)
    if not paths and not all_fs:
        wanted = list(data_root_fs)
    out = []
    for f in wanted:
        droots = list(dict.fromkeys(data_root_fs.get(f, []) + extra_roots.get(f, [])))
        mps = mps_of.get(f, [])
        if not os.path.isdir(roots.sys("fs", "btrfs", f)):
            problems.append(Problem("vanished", f"btrfs {f} has no sysfs directory", roots.sys("fs", "btrfs", f)))
            continue
        inp = read_inputs(roots, f, mps, droots)
        if inp.statvfs is None:
            problems.append(Problem("unreadable", f"btrfs {f}: no reachable mount point for statvfs; sizes unknown"))
        out.append(inp)
    return out, problems


# ---------------------------------------------------------------------------------------------
# capture / replay
def write_capture(inputs: list[BtrfsInputs], dest: str) -> list[str]:
    """Write each filesystem's inputs under dest/<FSID>/ (see the module docstring)."""
    written = []
    for inp in inputs:
        base = os.path.join(dest, inp.fsid)
        os.makedirs(os.path.join(base, "sysfs"), exist_ok=True)
        for rel, content in inp.attrs.items():
            target = os.path.join(base, "sysfs", rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w", encoding="utf-8") as fh:
                fh.write(content)
        _dump(os.path.join(base, "sysfs.json"), {"fsid": inp.fsid, "attrs": inp.attrs})
        sv: dict[str, object] = dict(inp.statvfs or {})
        if inp.mountpoints:
            sv["mountpoint"] = inp.mountpoints[0]
        _dump(os.path.join(base, "statvfs.json"), sv)
        if inp.devices:
            _dump(os.path.join(base, "devices.json"), [
                {"devid": d.devid, "path": d.path, "total_bytes": d.total_bytes, "used_bytes": d.used_bytes}
                for d in inp.devices
            ])
        _dump(os.path.join(base, "context.json"), {
            "mountpoints": list(inp.mountpoints),
            "docker_roots": list(inp.docker_roots),
            "subvolume_count": inp.subvolume_count,
        })
        written.append(base)
    return written


def _dump(path: str, doc: object) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
        fh.write("\n")


def _load_json(path: str) -> object | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise InputError(f"cannot read capture file {path}: {exc}", path=path) from None


def _capture_int(v: object) -> int | None:
    """An integer field of a capture file (written by write_capture as a JSON number)."""
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _is_capture(d: str) -> bool:
    return os.path.isfile(os.path.join(d, "sysfs.json")) or os.path.isdir(os.path.join(d, "sysfs"))


def read_capture(d: str) -> BtrfsInputs:
    """One filesystem's inputs from a capture directory."""
    sj = _load_json(os.path.join(d, "sysfs.json"))
    if isinstance(sj, dict) and isinstance(sj.get("attrs"), dict):
        attrs = {str(k): str(v) for k, v in sj["attrs"].items()}
        fsid = str(sj.get("fsid") or os.path.basename(os.path.normpath(d)))
    else:
        attrs = read_sysfs_tree(os.path.join(d, "sysfs"))
        fsid = os.path.basename(os.path.normpath(d))
    sv = _load_json(os.path.join(d, "statvfs.json"))
    statvfs = None
    mountpoints: list[str] = []
    if isinstance(sv, dict):
        statvfs = {k: int(v) for k, v in sv.items() if k in STATVFS_FIELDS and isinstance(v, int)}
        if isinstance(sv.get("mountpoint"), str):
            mountpoints.append(sv["mountpoint"])
    devices = None
    dj = _load_json(os.path.join(d, "devices.json"))
    if isinstance(dj, list):
        # a capture is input we did not necessarily write: keep only fields of the right type
        devices = tuple(
            BtrfsDevice(devid=_capture_int(x["devid"]),  # type: ignore[arg-type]
                        path=x.get("path") if isinstance(x.get("path"), str) else None,
                        total_bytes=_capture_int(x.get("total_bytes")), used_bytes=_capture_int(x.get("used_bytes")))
            for x in dj if isinstance(x, dict) and _capture_int(x.get("devid")) is not None
        )
    ctx = _load_json(os.path.join(d, "context.json"))
    docker_roots: list[str] = []
    subvols = None
    if isinstance(ctx, dict):
        mps, drs = ctx.get("mountpoints"), ctx.get("docker_roots")
        mountpoints = [m for m in (mps if isinstance(mps, list) else []) if isinstance(m, str)] or mountpoints
        docker_roots = [r for r in (drs if isinstance(drs, list) else []) if isinstance(r, str)]
        subvols = ctx.get("subvolume_count") if isinstance(ctx.get("subvolume_count"), int) else None
    if subvols is None:  # the shared samples record `btrfs subvolume list | wc -l` here
        try:
            with open(os.path.join(d, "cli", "subvolume_count.txt")) as fh:
                subvols = int(fh.read().strip())
        except (OSError, ValueError):
            pass
    return BtrfsInputs(fsid=fsid, attrs=attrs, statvfs=statvfs or None, devices=devices,
                       mountpoints=tuple(mountpoints), docker_roots=tuple(docker_roots),
                       subvolume_count=subvols, source=d)


def read_replay(replay: str) -> list[BtrfsInputs]:
    """A capture directory, or a folder of them (sorted by name)."""
    if not os.path.isdir(replay):
        raise NotFoundError(f"capture directory {replay} does not exist", path=replay)
    if _is_capture(replay):
        return [read_capture(replay)]
    subs = sorted(os.path.join(replay, n) for n in os.listdir(replay))
    caps = [read_capture(s) for s in subs if os.path.isdir(s) and _is_capture(s)]
    if not caps:
        raise InputError(f"{replay} holds no btrfs capture (no sysfs.json or sysfs/)", hint="point --replay at DIR/<FSID> or DIR", path=replay)
    return caps


# ---------------------------------------------------------------------------------------------
# the API other commands call
def inspect_btrfs(
    roots: HostRoots,
    paths: list[str] | None = None,
    all_fs: bool = False,
    replay: str | None = None,
    *,
    data_roots: Iterable[str] | None = None,
    capture: str | None = None,
) -> tuple[list[BtrfsReport], list[Problem]]:
    """Verdicts for the btrfs filesystems asked for (see gather_live), or for a replayed capture.

    With no paths and not all_fs: the filesystems backing container data roots; an empty list
    (and a Problem saying so) when there is none.
    """
    if replay is not None:
        if paths or all_fs:
            raise UsageError("--replay takes no PATH and no --all")
        inputs, problems = read_replay(replay), list[Problem]()
    else:
        inputs, problems = gather_live(roots, paths, all_fs, data_roots)
        if not inputs and not paths:
            what = "mounted btrfs filesystem" if all_fs else "btrfs filesystem backing a container data root"
            problems.append(Problem("none", f"no {what} was found"))
    if capture is not None:
        try:
            write_capture(inputs, capture)
        except OSError as exc:
            raise error_from_oserror(exc, capture, "write the capture to") from None
    return [assess_btrfs(i) for i in inputs], problems
