"""The one place that reads the host's /proc and /sys (I/O). Roots are injectable, not globals.

Every OSError is translated here into an OvlinspectError (fatal) or a Problem (non-fatal).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ovlinspect.errors import Problem, error_from_oserror, problem_from_oserror
from ovlinspect.model import Namespace

# Largest mountinfo we accept (a host with 100k mounts is ~30 MB); protects memory on /proc loops.
MAX_MOUNTINFO_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class HostRoots:
    """Where the host's state is read from: live roots, or a replayed capture."""

    proc_root: str = "/proc"
    sys_root: str = "/sys"
    mountinfo_file: str | None = None  # replay this file instead of /proc/self/mountinfo
    # runtime data roots named on the command line (ovlinspect.runtimes.discovery.RootOverrides)
    runtime_overrides: object | None = None

    @property
    def replay(self) -> bool:
        return self.mountinfo_file is not None

    def proc(self, *parts: str) -> str:
        return os.path.join(self.proc_root, *parts)

    def sys(self, *parts: str) -> str:
        return os.path.join(self.sys_root, *parts)


def read_bytes(path: str, limit: int = MAX_MOUNTINFO_BYTES, what: str = "read") -> bytes:
    """Read a whole (small, host-owned) file; raise an OvlinspectError on failure."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise error_from_oserror(exc, path, what) from None
    if len(data) > limit:
        from ovlinspect.errors import InputError

        raise InputError(f"{path} is larger than {limit} bytes", hint="is this really a mountinfo file?")
    return data


def read_mountinfo(roots: HostRoots, pid: str = "self") -> bytes:
    """The mountinfo to inspect: the replay file, or <proc>/<pid>/mountinfo."""
    if roots.mountinfo_file is not None:
        if roots.mountinfo_file == "-":
            import sys

            return sys.stdin.buffer.read(MAX_MOUNTINFO_BYTES)
        return read_bytes(roots.mountinfo_file)
    return read_bytes(roots.proc(pid, "mountinfo"))


def read_module_params(roots: HostRoots, module: str = "overlay") -> dict[str, str]:
    """/sys/module/<module>/parameters/* as {name: value}; empty when the module is not loaded."""
    base = roots.sys("module", module, "parameters")
    params: dict[str, str] = {}
    try:
        names = os.listdir(base)
    except OSError:
        return params
    for name in names:
        try:
            with open(os.path.join(base, name), "rb") as fh:
                params[name] = fh.read(4096).decode("ascii", "replace").strip()
        except OSError:
            continue
    return params


@dataclass
class NamespaceScan:
    namespaces: list[tuple[Namespace, list[int]]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    unreadable_pids: int = 0


def scan_mount_namespaces(roots: HostRoots) -> NamespaceScan:
    """Group live processes by /proc/<pid>/ns/mnt (psutil walks the pids). One entry per namespace."""
    import psutil

    scan = NamespaceScan()
    if roots.proc_root != "/proc":
        psutil.PROCFS_PATH = roots.proc_root
    seen: dict[str, tuple[Namespace, list[int]]] = {}
    try:
        own = os.readlink(roots.proc("self", "ns", "mnt"))
    except OSError:
        own = None
    for proc in psutil.process_iter(["pid", "name"]):
        pid = proc.info["pid"]
        try:
            ns_id = os.readlink(roots.proc(str(pid), "ns", "mnt"))
        except OSError:
            scan.unreadable_pids += 1
            continue
        if ns_id in seen:
            seen[ns_id][1].append(pid)
        else:
            seen[ns_id] = (Namespace(ns_id, pid, proc.info.get("name")), [pid])
    # the caller's own namespace first, then by first pid
    scan.namespaces = sorted(seen.values(), key=lambda t: (t[0].ns_id != own, t[0].pid or 0))
    if scan.unreadable_pids:
        scan.problems.append(
            Problem("permission", f"{scan.unreadable_pids} processes' mount namespaces could not be read (run as root)")
        )
    return scan


def read_namespace_mountinfo(roots: HostRoots, pids: list[int]) -> tuple[bytes | None, int | None, Problem | None]:
    """Read the mountinfo of a namespace through the first of its processes still alive."""
    last: Problem | None = None
    for pid in pids:
        path = roots.proc(str(pid), "mountinfo")
        try:
            with open(path, "rb") as fh:
                return fh.read(MAX_MOUNTINFO_BYTES), pid, None
        except OSError as exc:
            last = problem_from_oserror(exc, path)
    return None, None, last


class HostProbe:
    """Answers the few filesystem questions that `ls` asks about layer paths (I/O)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._exists: dict[str, bool | None] = {}  # busy hosts share lowers between many mounts

    def exists(self, path: str) -> bool | None:
        """Whether a layer path exists as the kernel would see it (layer paths are host paths
        written by the runtime, e.g. Docker's l/ symlinks, so they are followed like the kernel
        does). None when it cannot be told."""
        if not self.enabled:
            return None
        hit = self._exists.get(path, ...)
        if hit is not ...:
            return hit  # type: ignore[return-value]
        ans: bool | None
        try:
            os.stat(path)
            ans = True
        except (FileNotFoundError, NotADirectoryError):
            ans = False
        except OSError:
            ans = None
        self._exists[path] = ans
        return ans

    def realpath(self, path: str) -> str:
        if not self.enabled:
            return path
        try:
            return os.path.realpath(path)
        except OSError:
            return path

    def page_size(self) -> int:
        try:
            return os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return 4096
