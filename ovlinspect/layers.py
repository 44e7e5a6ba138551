"""The safe per-layer reader: lstat / scandir / xattrs by directory fd, never following a symlink. I/O.

Every layer is attacker-controlled (a container writes its upper dir), so:
- directories are opened one component at a time with openat(parent_fd, name,
  O_RDONLY|O_DIRECTORY|O_NOFOLLOW) — a symlink anywhere in a layer is never traversed;
- entries are lstat'ed with fstatat(dir_fd, name, AT_SYMLINK_NOFOLLOW); non-directories are
  never opened (a FIFO or device node could block or have side effects);
- xattrs are read with l*xattr on `/proc/self/fd/<dir_fd>/<name>`: the magic link pins the
  directory we already hold, and the last component is not followed.

Overlay markers (Documentation/filesystems/overlayfs.rst, fs/overlayfs/util.c):
- whiteout: a char device 0/0 (ovl_is_whiteout), or a zero-size regular file with
  `<prefix>whiteout` (ovl_path_check_xwhiteout_xattr; lookup honours it in every layer);
- `<prefix>opaque` on a directory: "y" opaque, "x" a directory holding xattr whiteouts;
- `<prefix>redirect` (dirs, and metacopy files), `<prefix>metacopy` (regular files).
The prefix is `trusted.overlay.` or `user.overlay.` (userxattr). trusted.* is invisible without
CAP_SYS_ADMIN: then the markers are *unknown* (Entry.xattrs_known False), never "absent".
"""

from __future__ import annotations

import errno
import os
import stat
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from ovlinspect.errors import Problem, problem_from_oserror

KIND_BY_FMT = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}
_DIR_FLAGS_NOATIME = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0)
# O_NOATIME is refused with EPERM unless the caller owns the file or has CAP_FOWNER (open(2)):
# unprivileged runs open without it.
_DIR_FLAGS = _DIR_FLAGS_NOATIME if os.geteuid() == 0 else _DIR_FLAGS_NOATIME & ~getattr(os, "O_NOATIME", 0)
TAR_WHITEOUT_PREFIX = ".wh."  # OCI image-spec layer.md: `.wh.<name>`, `.wh..wh..opq`
CAP_SYS_ADMIN = 21  # include/uapi/linux/capability.h


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of one layer, as lstat and the overlay xattrs describe it."""

    name: str
    kind: str  # file | dir | symlink | chardev | blockdev | fifo | socket
    mode: int  # st_mode (type bits included)
    size: int
    nlink: int = 1
    ino: int = 0
    dev: int = 0
    rdev: int = 0
    uid: int = 0
    gid: int = 0
    target: str | None = None  # symlink target (never followed)
    xwhiteout: bool = False  # zero-size regular file with <prefix>whiteout
    opaque: str | None = None  # raw value of <prefix>opaque on a directory
    redirect: str | None = None
    metacopy: bool = False
    xattrs_known: bool = True  # False: trusted.* unreadable (no CAP_SYS_ADMIN) or read failed

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"

    @property
    def chardev_whiteout(self) -> bool:
        return self.kind == "chardev" and self.rdev == 0

    @property
    def is_whiteout(self) -> bool:
        """What lookup treats as a whiteout (ovl_path_is_whiteout): char 0/0, or an xattr whiteout."""
        return self.chardev_whiteout or self.xwhiteout

    @property
    def whiteout_kind(self) -> str | None:
        if self.chardev_whiteout:
            return "chardev"
        if self.xwhiteout:
            return "xattr"
        return None

    @property
    def perm(self) -> int:
        return stat.S_IMODE(self.mode)


class ReadProblem(Exception):
    """A layer path could not be read; carries the Problem to report."""

    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


class LayerView(Protocol):
    """What the pure analyses need from layers (tests hand in a literal, see DictView)."""

    def n_layers(self) -> int: ...

    def entry(self, layer: int, path: tuple[str, ...]) -> Entry | None:
        """The entry at `path` (components from the layer root) or None; intermediate components
        must be real directories (a symlink or non-dir there means None). Raises ReadProblem."""
        ...

    def children(self, layer: int, path: tuple[str, ...]) -> Iterator[Entry]:
        """The entries of the directory at `path` (streamed, unsorted). Raises ReadProblem."""
        ...


def has_cap_sys_admin(proc_status: str = "/proc/self/status") -> bool:
    """CAP_SYS_ADMIN in the effective set: without it trusted.* xattrs read as absent."""
    try:
        with open(proc_status, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    except OSError:
        pass
    return os.geteuid() == 0


class LayerReader:
    """Reads the layer directories of one stack safely. Holds directory fds; close() when done."""

    def __init__(self, layer_paths: list[str], xattr_prefix: str = "trusted.overlay.", privileged: bool | None = None, fd_cache: int = 256):
        self.paths = list(layer_paths)
        self.prefix = xattr_prefix
        self.privileged = has_cap_sys_admin() if privileged is None else privileged
        # trusted.* is only visible with CAP_SYS_ADMIN; user.* always is
        self.xattrs_visible = self.privileged or not xattr_prefix.startswith("trusted.")
        self._k_whiteout = xattr_prefix + "whiteout"
        self._k_opaque = xattr_prefix + "opaque"
        self._k_redirect = xattr_prefix + "redirect"
        self._k_metacopy = xattr_prefix + "metacopy"
        self._fds: OrderedDict[tuple[int, tuple[str, ...]], int] = OrderedDict()
        self._last: dict[int, tuple[tuple[str, ...], int]] = {}  # per layer: the last dir asked for
        self._fd_cache = max(4, fd_cache)
        self._proc_fd = "/proc/self/fd"

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        self._last.clear()

    def __enter__(self) -> LayerReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def n_layers(self) -> int:
        return len(self.paths)

    # -- directory fds ---------------------------------------------------------------------
    def _remember(self, key: tuple[int, tuple[str, ...]], fd: int) -> None:
        self._fds[key] = fd
        self._last[key[0]] = (key[1], fd)
        while len(self._fds) > self._fd_cache:
            (olayer, _), old = self._fds.popitem(last=False)
            last = self._last.get(olayer)
            if last is not None and last[1] == old:
                del self._last[olayer]
            os.close(old)

    def dir_fd(self, layer: int, path: tuple[str, ...]) -> int | None:
        """An fd of the directory `path` in `layer` (cached), None if it is not a real directory
        there (absent, a symlink, a non-directory). Raises ReadProblem on other errors."""
        last = self._last.get(layer)
        if last is not None and last[0] == path:  # the common case: the same dir again (C-level compare)
            return last[1]
        key = (layer, path)
        fd = self._fds.get(key)
        if fd is not None:
            self._fds.move_to_end(key)
            self._last[layer] = (path, fd)
            return fd
        if last is not None and len(path) == len(last[0]) + 1 and path[:-1] == last[0]:
            return self._open_from(layer, path, len(path) - 1, last[1])  # a child of the last dir
        # start from the nearest cached ancestor
        start = len(path)
        while start > 0 and (layer, path[:start]) not in self._fds:
            start -= 1
        if start == 0 and (layer, ()) not in self._fds:
            try:
                fd = os.open(self.paths[layer], _DIR_FLAGS)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(self.paths[layer]):
                    raise ReadProblem(
                        Problem("symlink", "layer root is a symlink pointing outside its runtime directory: not followed", self.paths[layer])
                    ) from None
                raise ReadProblem(problem_from_oserror(exc, self.paths[layer], "open layer")) from None
            self._remember((layer, ()), fd)
        cur = self._fds[(layer, path[:start])]
        return self._open_from(layer, path, start, cur)

    def _open_from(self, layer: int, path: tuple[str, ...], start: int, cur: int) -> int | None:
        for i in range(start, len(path)):
            try:
                nfd = os.open(path[i], _DIR_FLAGS, dir_fd=cur)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    return None  # absent, or not a directory, or a symlink (never followed)
                raise ReadProblem(problem_from_oserror(exc, self.host_path(layer, path[: i + 1]), "open")) from None
            self._remember((layer, path[: i + 1]), nfd)
            cur = nfd
        return cur

    def host_path(self, layer: int, path: tuple[str, ...]) -> str:
        return os.path.join(self.paths[layer], *path) if path else self.paths[layer]

    # -- entries -----------------------------------------------------------------------------
    def entry(self, layer: int, path: tuple[str, ...]) -> Entry | None:
        if not path:
            fd = self.dir_fd(layer, ())
            assert fd is not None
            st = os.fstat(fd)
            return self._make(".", st, fd, None)
        parent = self.dir_fd(layer, path[:-1])
        if parent is None:
            return None
        name = path[-1]
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
                return None
            raise ReadProblem(problem_from_oserror(exc, self.host_path(layer, path), "lstat")) from None
        return self._make(name, st, None, parent)

    def children(self, layer: int, path: tuple[str, ...]) -> Iterator[Entry]:
        fd = self.dir_fd(layer, path)
        if fd is None:
            return
        # our own dup: the cached fd may be evicted (closed) while the caller iterates
        pfd = os.dup(fd)
        try:
            try:
                it = os.scandir(pfd)  # scandir dups again and rewinds on close
            except OSError as exc:
                raise ReadProblem(problem_from_oserror(exc, self.host_path(layer, path), "list")) from None
            with it:
                while True:
                    try:
                        de = next(it)
                    except StopIteration:
                        return
                    except OSError as exc:
                        raise ReadProblem(problem_from_oserror(exc, self.host_path(layer, path), "list")) from None
                    try:
                        st = de.stat(follow_symlinks=False)
                    except OSError as exc:
                        if exc.errno == errno.ENOENT:
                            continue  # vanished between readdir and lstat
                        raise ReadProblem(problem_from_oserror(exc, self.host_path(layer, path + (de.name,)), "lstat")) from None
                    yield self._make(de.name, st, None, pfd)
        finally:
            os.close(pfd)

    def names(self, layer: int, path: tuple[str, ...], limit: int) -> list[str]:
        """Up to `limit` names of a directory, without lstat or xattrs (for near-name suggestions)."""
        fd = self.dir_fd(layer, path)
        if fd is None:
            return []
        out: list[str] = []
        pfd = os.dup(fd)
        try:
            with os.scandir(pfd) as it:
                for de in it:
                    if len(out) >= limit:
                        break
                    out.append(de.name)
        except OSError as exc:
            raise ReadProblem(problem_from_oserror(exc, self.host_path(layer, path), "list")) from None
        finally:
            os.close(pfd)
        return out

    def _make(self, name: str, st: os.stat_result, own_fd: int | None, parent_fd: int | None) -> Entry:
        fmt = stat.S_IFMT(st.st_mode)
        kind = KIND_BY_FMT.get(fmt, "unknown")
        target = None
        if kind == "symlink" and parent_fd is not None:
            try:
                target = os.readlink(name, dir_fd=parent_fd)
            except OSError:
                target = None
        rec: dict[str, object] = {}
        known = True
        # only the entries whose markers matter for lookup: dirs, regular files (whiteout when
        # empty, metacopy), and symlinks never (overlay ignores xattrs on them)
        if kind in ("dir", "file"):
            if not self.xattrs_visible:
                known = False
            else:
                try:
                    rec = self._overlay_xattrs(name, own_fd, parent_fd, kind, st.st_size)
                except OSError:
                    known = False
        return Entry(
            name=name,
            kind=kind,
            mode=st.st_mode,
            size=st.st_size,
            nlink=st.st_nlink,
            ino=st.st_ino,
            dev=st.st_dev,
            rdev=st.st_rdev,
            uid=st.st_uid,
            gid=st.st_gid,
            target=target,
            xwhiteout=bool(rec.get("xwhiteout", False)),
            opaque=rec.get("opaque"),  # type: ignore[arg-type]
            redirect=rec.get("redirect"),  # type: ignore[arg-type]
            metacopy=bool(rec.get("metacopy", False)),
            xattrs_known=known,
        )

    def _xpath(self, name: str, own_fd: int | None, parent_fd: int | None) -> str | int:
        if own_fd is not None:
            return own_fd
        return f"{self._proc_fd}/{parent_fd}/{name}"

    def _overlay_xattrs(self, name: str, own_fd: int | None, parent_fd: int | None, kind: str, size: int) -> dict[str, object]:
        p = self._xpath(name, own_fd, parent_fd)
        names = _listx(p)
        out: dict[str, object] = {}
        if not names:
            return out
        pre = self.prefix
        for k in names:
            if not k.startswith(pre):
                continue
            if kind == "file" and k == self._k_whiteout and size == 0:
                out["xwhiteout"] = True
            elif kind == "file" and k == self._k_metacopy:
                out["metacopy"] = True
            elif kind == "dir" and k == self._k_opaque:
                out["opaque"] = _getx(p, k).decode("utf-8", "surrogateescape")
            elif k == self._k_redirect:
                out["redirect"] = os.fsdecode(_getx(p, k))
        return out

    def all_overlay_xattrs(self, layer: int, path: tuple[str, ...]) -> dict[str, bytes] | None:
        """Every `<prefix>*` xattr of an entry (for reports); None when unknown."""
        if not self.xattrs_visible:
            return None
        parent = self.dir_fd(layer, path[:-1]) if path else None
        try:
            if not path:
                fd = self.dir_fd(layer, ())
                p: str | int = fd  # type: ignore[assignment]
            else:
                p = f"{self._proc_fd}/{parent}/{path[-1]}"
            out = {}
            for k in _listx(p):
                if k.startswith(self.prefix):
                    out[k] = _getx(p, k)
            return out
        except OSError:
            return None


def _listx(p: str | int) -> list[str]:
    # an fd is the entry itself; a /proc/self/fd/N/name path must not follow its last component
    return os.listxattr(p) if isinstance(p, int) else os.listxattr(p, follow_symlinks=False)


def _getx(p: str | int, k: str) -> bytes:
    return os.getxattr(p, k) if isinstance(p, int) else os.getxattr(p, k, follow_symlinks=False)


class DictView:
    """A literal LayerView for unit tests: {layer: {"a/b": Entry, ...}} (dirs implied by paths)."""

    def __init__(self, layers: list[dict[str, Entry]]):
        self.layers = []
        for d in layers:
            full: dict[tuple[str, ...], Entry] = {(): Entry(".", "dir", stat.S_IFDIR | 0o755, 0)}
            for p, e in d.items():
                comps = tuple(c for c in p.split("/") if c)
                for i in range(1, len(comps)):
                    full.setdefault(comps[:i], Entry(comps[i - 1], "dir", stat.S_IFDIR | 0o755, 0))
                full[comps] = e
            self.layers.append(full)
        # paths whose every ancestor is a directory (what a walk without following reaches)
        self.reachable = []
        for full in self.layers:
            ok: set[tuple[str, ...]] = {()}
            for k in sorted(full, key=len):
                if k and k[:-1] in ok and full[k[:-1]].is_dir:
                    ok.add(k)
            self.reachable.append(ok)

    def n_layers(self) -> int:
        return len(self.layers)

    def entry(self, layer: int, path: tuple[str, ...]) -> Entry | None:
        if path not in self.reachable[layer]:
            return None
        return self.layers[layer].get(path)

    def children(self, layer: int, path: tuple[str, ...]) -> Iterator[Entry]:
        d = self.layers[layer]
        e = d.get(path)
        if e is None or not e.is_dir:
            return
        n = len(path)
        for k, v in d.items():
            if len(k) == n + 1 and k[:n] == path:
                yield v
