"""Test helper: real btrfs filesystems on loop devices, Docker-like layer subvolumes, and the fast
recipe that drives one to metadata ENOSPC; plus a parser for `btrfs filesystem usage -b`.

Backing files live in a temp dir; loop devices are attached with `losetup --find --show` and
always detached in `LoopBtrfs.close()` (the fixtures call it in teardown). Mounts are made in the
test session's private mount namespace (conftest.py), so nothing leaks to the host.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

MiB = 1024 * 1024


def have_btrfs() -> str | None:
    """None when real btrfs tests can run here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "needs root (loop devices, mount)"
    for tool in ("mkfs.btrfs", "btrfs", "losetup"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (scripts/test-packages.txt: btrfs-progs, util-linux)"
    try:
        with open("/proc/filesystems") as fh:
            if "btrfs" not in fh.read():
                subprocess.run(["modprobe", "btrfs"], check=False, capture_output=True)
    except OSError:
        pass
    with open("/proc/filesystems") as fh:
        if "btrfs" not in fh.read():
            return "the kernel has no btrfs"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control"
    return None


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


@dataclass
class LoopBtrfs:
    """A mounted btrfs on one or more loop devices."""

    tmp: str
    files: list[str] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)
    mnt: str = ""
    mounted: bool = False

    @classmethod
    def create(cls, sizes_mib: list[int], mkfs_args: list[str] | None = None, tmp: str | None = None) -> LoopBtrfs:
        fs = cls(tmp=tempfile.mkdtemp(prefix="ovl-btrfs-", dir=tmp))
        try:
            for i, size in enumerate(sizes_mib):
                f = os.path.join(fs.tmp, f"dev{i}.img")
                with open(f, "wb") as fh:
                    fh.truncate(size * MiB)
                fs.files.append(f)
                fs.loops.append(run("losetup", "--find", "--show", f).stdout.strip())
            run("mkfs.btrfs", "-q", "-f", *(mkfs_args or []), *fs.loops)
            fs.mnt = os.path.join(fs.tmp, "mnt")
            os.mkdir(fs.mnt)
            run("mount", "-t", "btrfs", fs.loops[0], fs.mnt)
            fs.mounted = True
        except BaseException:
            fs.close()
            raise
        return fs

    @property
    def fsid(self) -> str:
        return run("findmnt", "-n", "-o", "UUID", "--target", self.mnt).stdout.strip()

    def sync(self) -> None:
        """Commit the running transaction (settles reservations; fails quietly once read-only)."""
        run("btrfs", "filesystem", "sync", self.mnt, check=False)

    def grow_device(self, index: int, add_mib: int) -> None:
        """Grow a backing file, tell the loop driver, and resize that btrfs device to max."""
        with open(self.files[index], "r+b") as fh:
            fh.truncate(os.path.getsize(self.files[index]) + add_mib * MiB)
        run("losetup", "-c", self.loops[index])
        run("btrfs", "filesystem", "resize", f"{index + 1}:max", self.mnt)

    def close(self) -> None:
        if self.mounted:
            r = run("umount", self.mnt, check=False)
            if r.returncode != 0:
                run("umount", "-l", self.mnt, check=False)
            self.mounted = False
        for loop in self.loops:
            run("losetup", "-d", loop, check=False)
        self.loops = []
        shutil.rmtree(self.tmp, ignore_errors=True)


# --- Docker's btrfs driver layout: <root>/btrfs/subvolumes/<id>, each layer a snapshot of its parent
def make_layers(data_root: str, count: int, files_per_layer: int = 20, start: int = 0) -> list[str]:
    base = os.path.join(data_root, "btrfs", "subvolumes")
    os.makedirs(base, exist_ok=True)
    existing = sorted(os.listdir(base))
    parent = os.path.join(base, existing[-1]) if existing else None
    made = []
    for i in range(start, start + count):
        path = os.path.join(base, f"{i:04d}" + "a" * 60)
        if parent is None:
            run("btrfs", "subvolume", "create", path)
        else:
            run("btrfs", "subvolume", "snapshot", parent, path)
        d = os.path.join(path, f"layer{i}")
        os.makedirs(d, exist_ok=True)
        for j in range(files_per_layer):
            with open(os.path.join(d, f"f{j}"), "wb") as fh:
                fh.write(b"x" * 100)
        made.append(path)
        parent = path
    return made


def delete_layers(paths: list[str], mnt: str) -> None:
    for p in paths:
        run("btrfs", "subvolume", "delete", p)
    # a commit wakes the cleaner now instead of at the next 30 s commit interval
    run("btrfs", "filesystem", "sync", mnt)
    run("btrfs", "subvolume", "sync", mnt)


# --- the fast road to metadata ENOSPC ------------------------------------------------------------
def fill_data(where: str, file_mib: int = 4) -> list[str]:
    """fallocate files until ENOSPC (then smaller ones), so every byte is allocated to data chunks."""
    os.makedirs(where, exist_ok=True)
    made: list[str] = []
    for size in (file_mib * MiB, 256 * 1024, 16 * 1024):
        while True:
            p = os.path.join(where, f"fill{len(made):05d}")
            try:
                fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return made
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                os.close(fd)
                os.unlink(p)
                if exc.errno != errno.ENOSPC:
                    raise
                break
            os.close(fd)
            made.append(p)
    return made


def punch_fill(files: list[str], keep_every: int = 4) -> None:
    """Delete most fill files but keep every Nth, so each data chunk stays partly used (allocated)."""
    for i, p in enumerate(files):
        if i % keep_every:
            os.unlink(p)


def metadata_files(where: str, count: int, value_size: int = 15000) -> None:
    """`count` files with a large xattr each (about `value_size` bytes of metadata apiece)."""
    os.makedirs(where, exist_ok=True)
    for i in range(count):
        p = os.path.join(where, f"m{i:06d}")
        os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
        os.setxattr(p, "user.blob", b"m" * value_size)


def xattrs_until_enospc(where: str, on_batch: Callable[[int], None] | None = None, batch: int = 40, value_size: int = 15000, limit: int = 200000) -> tuple[int, str]:
    """Create files with a large xattr each until ENOSPC; call on_batch(n) every `batch` files.

    Returns (files made, what failed: "create:ENOSPC", "setxattr:EROFS", ...). ENOSPC ends it, and
    so does EROFS (a transaction aborted by ENOSPC turns the filesystem read-only)."""
    os.makedirs(where, exist_ok=True)
    value = b"v" * value_size
    n = 0
    while n < limit:
        p = os.path.join(where, f"x{n:06d}")
        try:
            fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EROFS):
                return n, f"create:{errno.errorcode[exc.errno]}"
            raise
        os.close(fd)
        try:
            os.setxattr(p, "user.blob", value)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EROFS):
                return n, f"setxattr:{errno.errorcode[exc.errno]}"
            raise
        n += 1
        if on_batch is not None and n % batch == 0:
            on_batch(n)
    raise AssertionError(f"no ENOSPC after {limit} xattrs")


# --- `btrfs filesystem usage -b` -----------------------------------------------------------------
_SECTION = re.compile(r"^(Data|Metadata|System),(\S+): Size:(\d+), Used:(\d+)")


def parse_usage(out: str) -> dict[str, object]:
    """Overall numbers, per-type Size/Used/profile, and per-device lines of each section."""
    res: dict[str, object] = {"overall": {}, "types": {}, "unallocated": {}}
    overall: dict[str, int] = res["overall"]  # type: ignore[assignment]
    types: dict[str, dict[str, object]] = res["types"]  # type: ignore[assignment]
    unalloc: dict[str, int] = res["unallocated"]  # type: ignore[assignment]
    section: str | None = None
    for line in out.splitlines():
        m = _SECTION.match(line)
        if m:
            section = m.group(1).lower()
            types[section] = {"profile": m.group(2).lower(), "size": int(m.group(3)), "used": int(m.group(4)), "devices": {}}
            continue
        if line.startswith("Unallocated:"):
            section = "unallocated"
            continue
        if line.startswith("    ") and ":" in line and section is None:
            key, _, rest = line.strip().partition(":")
            nums = re.findall(r"-?\d+(?:\.\d+)?", rest)
            if nums and "." not in nums[0]:
                overall[key.strip()] = int(nums[0])
            continue
        if line.startswith("   /") or line.startswith("   missing"):
            dev, num = line.split()[:2]
            if section == "unallocated":
                unalloc[dev] = int(num)
            elif section:
                types[section]["devices"][dev] = int(num)  # type: ignore[index]
    return res


def usage(mnt: str) -> dict[str, object]:
    return parse_usage(run("btrfs", "filesystem", "usage", "-b", mnt).stdout)
