"""Test helper: make real overlay mounts with mount(2) and with the new mount API (ctypes).

Paths are bytes or str (str is os.fsencode'd), so any name the kernel accepts can be used.
The test session runs in a private mount namespace (see conftest.py), so nothing leaks out.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# x86_64 / generic syscall numbers (include/uapi/asm-generic/unistd.h)
SYS_move_mount = 429
SYS_fsopen = 430
SYS_fsconfig = 431
SYS_fsmount = 432
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
MNT_DETACH = 2


def _b(p: str | bytes) -> bytes:
    return p if isinstance(p, bytes) else os.fsencode(p)


def _check(rc: int, what: str) -> int:
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return rc


def escape_layer(p: bytes, colon: bool = True) -> bytes:
    """The user escape syntax of lowerdir=/upperdir= in mount(2) data: backslash-escape \\ , (and :)."""
    p = p.replace(b"\\", b"\\\\").replace(b",", b"\\,")
    return p.replace(b":", b"\\:") if colon else p


def mount_legacy(
    target: str | bytes,
    lowers: Sequence[str | bytes],
    upper: str | bytes | None = None,
    work: str | bytes | None = None,
    data_only: Sequence[str | bytes] = (),
    extra: str = "",
    escape: bool = True,
) -> None:
    """mount(2) an overlay; `lowers` top first; `data_only` after '::'."""
    esc = (lambda p: escape_layer(_b(p))) if escape else _b
    opts = b"lowerdir=" + b":".join(esc(p) for p in lowers)
    if data_only:
        opts += b"".join(b"::" + esc(p) for p in data_only)  # each data-only layer after '::'
    if upper is not None:
        opts += b",upperdir=" + escape_layer(_b(upper), colon=False) + b",workdir=" + escape_layer(_b(work or b""), colon=False)
    if extra:
        opts += b"," + extra.encode()
    rc = _libc.mount(b"overlay", _b(target), b"overlay", ctypes.c_ulong(0), opts)
    _check(rc, f"mount overlay ({opts[:200]!r})")


def mount_newapi(
    target: str | bytes,
    lowers: Sequence[str | bytes],
    upper: str | bytes | None = None,
    work: str | bytes | None = None,
    data_only: Sequence[str | bytes] = (),
    flags: Sequence[str] = (),
    strings: Sequence[tuple[str, str]] = (),
) -> None:
    """fsopen/fsconfig/fsmount/move_mount with lowerdir+= and datadir+= (one path each)."""
    fd = _check(_libc.syscall(SYS_fsopen, b"overlay", 0), "fsopen")
    try:
        def s(key: bytes, val: bytes) -> None:
            _check(_libc.syscall(SYS_fsconfig, fd, FSCONFIG_SET_STRING, key, val, 0), f"fsconfig {key!r}={val!r}")

        for p in lowers:
            s(b"lowerdir+", _b(p))
        for p in data_only:
            s(b"datadir+", _b(p))
        if upper is not None:
            # the kernel removes backslash escapes from upperdir/workdir with either API
            s(b"upperdir", _b(upper).replace(b"\\", b"\\\\"))
            s(b"workdir", _b(work or b"").replace(b"\\", b"\\\\"))
        for k, v in strings:
            s(k.encode(), v.encode())
        for f in flags:
            _check(_libc.syscall(SYS_fsconfig, fd, FSCONFIG_SET_FLAG, f.encode(), None, 0), f"fsconfig flag {f}")
        _check(_libc.syscall(SYS_fsconfig, fd, FSCONFIG_CMD_CREATE, None, None, 0), "fsconfig create")
        mfd = _check(_libc.syscall(SYS_fsmount, fd, 0, 0), "fsmount")
        try:
            _check(_libc.syscall(SYS_move_mount, mfd, b"", AT_FDCWD, _b(target), MOVE_MOUNT_F_EMPTY_PATH), "move_mount")
        finally:
            os.close(mfd)
    finally:
        os.close(fd)


def umount(target: str | bytes, lazy: bool = True) -> None:
    _check(_libc.umount2(_b(target), MNT_DETACH if lazy else 0), "umount2")


def in_private_namespace() -> bool:
    try:
        return os.readlink("/proc/self/ns/mnt") != os.readlink("/proc/1/ns/mnt")
    except OSError:
        return False


def enter_private_mount_namespace() -> None:
    """unshare(CLONE_NEWNS) and make every mount private, like `unshare -m --propagation private`."""
    CLONE_NEWNS = 0x00020000
    MS_REC, MS_PRIVATE = 0x4000, 1 << 18
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None), "make / rprivate")
