"""Test helper for `ovlinspect check`: real loop filesystems, and running the CLI in a sandbox.

`run_check(keep, args)` runs `python check_env.py --keep DIR -- ARGS`: a fresh private mount
namespace (copied from the test session's) in which every overlay mount *not* under DIR is
detached before `ovlinspect check` runs, so other tests' mounts cannot change the exit code.
Nothing is mocked: the command reads the real mountinfo, statvfs and directories.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check)


@contextlib.contextmanager
def loopfs(path: str, size_mb: int, mkfs: list[str], mount_opts: str = "") -> Iterator[str]:
    """A real filesystem on a loop device: `<path>.img`, formatted with mkfs, mounted on `path`."""
    img = path + ".img"
    with open(img, "wb") as fh:
        fh.truncate(size_mb * 1024 * 1024)
    sh(*mkfs, img)
    os.makedirs(path, exist_ok=True)
    opts = "loop" + ("," + mount_opts if mount_opts else "")
    sh("mount", "-o", opts, img, path)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)
        with contextlib.suppress(OSError):
            os.unlink(img)


def run_check(keep: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `ovlinspect check ARGS` in the sandbox that keeps only overlay mounts under `keep`."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("OVLINSPECT_DEBUG", None)
    return subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--keep", keep, "--", "check", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of a text exposition, label values unescaped (\\\\, \\", \\n)."""
    out = {}
    for line in text.split("\n"):  # the format's only line separator (not \r, \v, U+2028...)
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = frozenset(
            (k, re.sub(r"\\(.)", lambda mm: "\n" if mm.group(1) == "n" else mm.group(1), v))
            for k, v in _LABEL.findall(m.group(2) or "")
        )
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def _sandbox(keep: str, argv: list[str]) -> None:
    sys.path.insert(0, HERE)
    sys.path.insert(0, REPO)
    from ovl import _libc, enter_private_mount_namespace

    from ovlinspect.analysis.mounts import is_overlay
    from ovlinspect.mountinfo import parse_mountinfo

    enter_private_mount_namespace()
    with open("/proc/self/mountinfo", "rb") as fh:
        entries, _ = parse_mountinfo(fh.read())
    keep = keep.rstrip("/") + "/"
    for e in reversed(entries):
        if is_overlay(e) and not (e.mountpoint + "/").startswith(keep):
            _libc.umount2(os.fsencode(e.mountpoint), 2)  # MNT_DETACH
    from ovlinspect.cli import app

    app(args=argv, prog_name="ovlinspect")


if __name__ == "__main__":
    i = sys.argv.index("--")
    _sandbox(sys.argv[sys.argv.index("--keep") + 1], sys.argv[i + 1 :])
