"""Test helper: a byte-exact fingerprint of a directory tree (content, mode, owner, xattrs, mtime),
taken without following symlinks, to prove that ovlinspect never writes to what it inspects."""

from __future__ import annotations

import hashlib
import os
import stat


def _xattrs(path: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for n in names:
        try:
            out[os.fsencode(n)] = os.getxattr(path, n, follow_symlinks=False)
        except OSError as exc:
            out[os.fsencode(n)] = f"<error {exc.errno}>".encode()
    return out


def fingerprint(root: str | bytes) -> dict[bytes, tuple]:
    """{relative path: (mode, uid, gid, size, mtime_ns, rdev, nlink, xattrs, content digest or link)}."""
    root_b = os.fsencode(root)
    out: dict[bytes, tuple] = {}
    stack = [root_b]
    while stack:
        d = stack.pop()
        st = os.lstat(d)
        rel = os.path.relpath(d, root_b)
        out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, tuple(sorted(_xattrs(d).items())))
        if not stat.S_ISDIR(st.st_mode):
            continue
        for e in os.scandir(d):
            p = e.path
            est = os.lstat(p)
            if stat.S_ISDIR(est.st_mode):
                stack.append(p)
                continue
            if stat.S_ISREG(est.st_mode):
                h = hashlib.sha256()
                with open(p, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
                content = h.hexdigest().encode()
            elif stat.S_ISLNK(est.st_mode):
                content = os.readlink(p)
            else:
                content = b""
            out[os.path.relpath(p, root_b)] = (
                est.st_mode,
                est.st_uid,
                est.st_gid,
                est.st_size,
                est.st_mtime_ns,
                est.st_rdev,
                est.st_nlink,
                tuple(sorted(_xattrs(p).items())),
                content,
            )
    return out


def diff_fingerprints(before: dict, after: dict) -> list[str]:
    """Human-readable differences (empty when identical)."""
    out = []
    for k in sorted(set(before) | set(after)):
        if before.get(k) != after.get(k):
            out.append(f"{k!r}: {before.get(k)!r} -> {after.get(k)!r}")
    return out
