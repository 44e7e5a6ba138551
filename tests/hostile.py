"""Test helper: build a small but nasty container host — real overlay mounts whose layers hold
hostile names, escaping symlinks, loops, kernel-made whiteouts and opaque dirs. Needs root."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ovl import mount_legacy

# Names a container can create, each aimed at a terminal, a parser or a JSON encoder ('/' is
# the one byte a name cannot hold, so markup close tags and URLs are written without it).
HOSTILE_NAMES: list[bytes] = [
    b"esc-\x1b[31mred\x1b[0m",
    b"cr-\roverwrite",
    b"nl-\nnewline",
    b"bel-\x07",
    b"osc8-\x1b]8;;http:evil.example\x07click\x1b]8;;\x07",
    b"markup-[bold red]boom",
    b"link-[link=http:evil.example]x",
    b"bidi-\xe2\x80\xaeexe.txt",
    b"invalid-utf8-\xff\xfe",
    b"tab-\tsep",
    b"back\\slash",
    b"-leading-dash",
]


@dataclass
class HostileHost:
    base: bytes
    lower2: bytes  # bottom
    lower1: bytes
    upper: bytes
    work: bytes
    merged: bytes
    layer_link: bytes  # a symlink to lower1: a "symlinked layer root"
    secret: bytes  # a host file outside every layer that must never be read or reported

    @property
    def lowerdir_option(self) -> str:
        return os.fsdecode(self.lower1 + b":" + self.lower2)


def _w(path: bytes, data: bytes = b"x") -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def build_hostile_host(base: str | bytes) -> HostileHost:
    b = os.fsencode(base)
    lower2, lower1, upper, work, merged = (os.path.join(b, n) for n in (b"lower2", b"lower1", b"upper", b"work", b"merged"))
    for d in (lower2, lower1, upper, work, merged):
        os.makedirs(d)
    secret = os.path.join(b, b"host-secret")
    _w(secret, b"TOP-SECRET-HOST-DATA\n")
    # lower2 (bottom): ordinary content
    for d in (b"data", b"opq", b"etc", b"replaced", b"deep/a/b/c"):
        os.makedirs(os.path.join(lower2, d))
    _w(os.path.join(lower2, b"data/keep"), b"keep\n")
    _w(os.path.join(lower2, b"data/deleted-by-lower1"), b"gone\n")
    _w(os.path.join(lower2, b"data/rm-me"), b"rm\n")
    _w(os.path.join(lower2, b"opq/hidden"), b"hidden\n")
    _w(os.path.join(lower2, b"etc/os-release"), b"ID=container\n")
    _w(os.path.join(lower2, b"replaced/inner"), b"inner\n")
    _w(os.path.join(lower2, b"deep/a/b/c/leaf"), b"leaf\n")
    for n in HOSTILE_NAMES:
        _w(os.path.join(lower2, b"data", n), n)
    # lower1: escaping and looping symlinks, a whiteout, an opaque dir, a file replacing a dir
    os.symlink(b"/", os.path.join(lower1, b"root-link"))
    os.symlink(b"../../../../../../../../", os.path.join(lower1, b"up-link"))
    os.symlink(os.path.join(b, b"host-secret"), os.path.join(lower1, b"secret-link"))
    os.symlink(b"loop-b", os.path.join(lower1, b"loop-a"))
    os.symlink(b"loop-a", os.path.join(lower1, b"loop-b"))
    os.symlink(b"self", os.path.join(lower1, b"self"))
    os.makedirs(os.path.join(lower1, b"data"))
    os.mknod(os.path.join(lower1, b"data/deleted-by-lower1"), 0o600 | 0o020000, os.makedev(0, 0))
    os.makedirs(os.path.join(lower1, b"opq"))
    os.setxattr(os.path.join(lower1, b"opq"), b"trusted.overlay.opaque", b"y")
    _w(os.path.join(lower1, b"opq/visible"), b"visible\n")
    _w(os.path.join(lower1, b"replaced"), b"now a file\n")
    for n in HOSTILE_NAMES[:4]:
        os.symlink(n, os.path.join(lower1, b"ln-" + n))
    layer_link = os.path.join(b, b"layer-link")
    os.symlink(lower1, layer_link)
    # mount, and let the kernel make whiteouts, opaque dirs and copy-ups in the upper
    mount_legacy(merged, [lower1, lower2], upper, work)
    os.unlink(os.path.join(merged, b"data/rm-me"))
    import shutil

    shutil.rmtree(os.path.join(merged, b"deep"))
    os.makedirs(os.path.join(merged, b"deep"))
    _w(os.path.join(merged, b"deep/new"), b"new\n")
    with open(os.path.join(merged, b"data/keep"), "ab") as fh:
        fh.write(b"more\n")
    _w(os.path.join(merged, b"upper-\x1b]0;title\x07-" + HOSTILE_NAMES[8]), b"u")
    return HostileHost(b, lower2, lower1, upper, work, merged, layer_link, secret)
