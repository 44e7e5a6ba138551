"""Differential test: the kernel is the oracle for `tree` and `why-missing`.

Hypothesis generates stacks of 1-6 layers (files, dirs, symlinks, hard links, char 0/0
whiteouts, xattr whiteouts, opaque y / x / bad values, every type clash on a few shared names);
each stack is mounted for real (private mount namespace, see conftest.py) and
- the kernel's merged tree (readdir + lstat: names, types, sizes, modes, link targets, content,
  and lookup errors) must equal the offline reconstruction (analysis.merged.walk_merged);
- every path present in any layer must get the kernel's visibility (lstat succeeds) from
  analysis.lookup.explain_path.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ovlinspect.analysis.lookup import LookupContext, explain_path
from ovlinspect.analysis.merged import TreeError, TreeItem, walk_merged
from ovlinspect.layers import LayerReader
from ovlinspect.model import EffectiveOption, Layer, LayerRole, LayerStack

IS_ROOT = os.geteuid() == 0
pytestmark = [pytest.mark.kernel]

NAMES = ["a", "b", "c"]
CONTENTS = [b"", b"one\n", b"two two\n", b"x" * 5000]


# --------------------------------------------------------------------------------------------
# building layers


@dataclass
class Node:
    kind: str  # file | dir | symlink | chardev_wh | xattr_wh | hardlink | fifo
    content: bytes = b""
    mode: int = 0o644
    opaque: bytes | None = None
    target: str = ""
    children: dict[str, Node] = field(default_factory=dict)
    metacopy: bool = False


def build_layer(root: str, tree: dict[str, Node], prefix: str = "trusted.overlay.") -> None:
    """Create the nodes under `root` (iteratively); hard links point at the first file made."""
    os.makedirs(root, exist_ok=True)
    first_file: list[str] = []
    todo = [(root, tree)]
    links: list[tuple[str, str]] = []
    while todo:
        base, nodes = todo.pop()
        for name, n in sorted(nodes.items()):
            p = os.path.join(base, name)
            if n.kind == "dir":
                os.mkdir(p)
                os.chmod(p, n.mode)
                if n.opaque is not None:
                    os.setxattr(p, prefix + "opaque", n.opaque)
                todo.append((p, n.children))
            elif n.kind == "file":
                with open(p, "wb") as f:
                    f.write(n.content)
                os.chmod(p, n.mode)
                if n.metacopy:
                    os.setxattr(p, prefix + "metacopy", b"")
                first_file.append(p)
            elif n.kind == "symlink":
                os.symlink(n.target, p)
            elif n.kind == "chardev_wh":
                os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(0, 0))
            elif n.kind == "xattr_wh":
                open(p, "wb").close()
                os.setxattr(p, prefix + "whiteout", b"")
            elif n.kind == "fifo":
                os.mkfifo(p, 0o640)
            elif n.kind == "hardlink":
                links.append((p, n.content.decode()))
    for p, _ in links:
        if first_file:
            os.link(first_file[0], p)
        else:
            with open(p, "wb") as f:
                f.write(b"lonely\n")


def make_stack(layer_dirs: list[str], upper: str | None, options: dict[str, str] | None = None,
               data_dirs: list[str] = ()) -> LayerStack:
    layers: list[Layer] = []
    if upper is not None:
        layers.append(Layer(0, LayerRole.UPPER, upper, upper, True, True))
    for p in layer_dirs:
        layers.append(Layer(len(layers), LayerRole.LOWER, p, p, True, True))
    for p in data_dirs:
        layers.append(Layer(len(layers), LayerRole.DATA_ONLY, p, p, True, True))
    opts = {"redirect_dir": "follow", "metacopy": "off", "index": "off", "userxattr": "off"}
    opts.update(options or {})
    return LayerStack(tuple(layers), {k: EffectiveOption(v, "mount") for k, v in opts.items()}, "test stack")


# --------------------------------------------------------------------------------------------
# reading the kernel's merged view and ours


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _kind(mode: int) -> str:
    return {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "chardev",
            stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}[stat.S_IFMT(mode)]


def kernel_tree(mnt: str) -> dict[str, tuple]:
    """path -> (kind, size, perm, target, digest) or ("error", errno name) for the mounted view."""
    out: dict[str, tuple] = {}
    todo = [""]
    while todo:
        rel = todo.pop()
        base = os.path.join(mnt, rel) if rel else mnt
        for de in os.scandir(base):
            r = f"{rel}/{de.name}" if rel else de.name
            try:
                s = os.lstat(os.path.join(base, de.name))
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue  # a readdir ghost (see analysis/merged.py)
                out[r] = ("error", errno.errorcode[exc.errno])
                continue
            k = _kind(s.st_mode)
            tgt = os.readlink(os.path.join(base, de.name)) if k == "symlink" else None
            size = s.st_size if k != "dir" else -1
            try:
                dig = _digest(os.path.join(base, de.name)) if k == "file" else None
            except OSError as exc:
                dig = errno.errorcode[exc.errno]  # e.g. ENOENT: a metacopy file whose data is missing
            out[r] = (k, size, stat.S_IMODE(s.st_mode), tgt, dig)
            if k == "dir":
                todo.append(r)
    return out


def offline_tree(stack: LayerStack) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    with LayerReader([la.path for la in stack.layers], stack.xattr_prefix) as rd:
        ctx = LookupContext(stack, rd)
        for it in walk_merged(ctx):
            if isinstance(it, TreeError):
                if it.errno_name:
                    out["/".join(it.path)] = ("error", it.errno_name)
                continue
            assert isinstance(it, TreeItem)
            e = it.entry
            r = "/".join(it.path)
            dig = None
            if e.kind == "file":
                if e.metacopy and it.data_layer is None:
                    dig = "ENOENT"  # stat works, open fails: the data-only layers lack the data
                elif it.data_layer is not None and it.data_path is not None:
                    dig = _digest(os.path.join(stack.layers[it.data_layer].path, *it.data_path))
                else:
                    dig = _digest(os.path.join(stack.layers[it.layer].path, *(it.layer_path or it.path)))
            out[r] = (e.kind, e.size if e.kind != "dir" else -1, e.perm, e.target, dig)
    return out


def layer_paths(stack: LayerStack) -> set[str]:
    """Every path present in any layer (walked without following anything)."""
    out: set[str] = set()
    for la in stack.layers:
        todo = [""]
        while todo:
            rel = todo.pop()
            for de in os.scandir(os.path.join(la.path, rel) if rel else la.path):
                r = f"{rel}/{de.name}" if rel else de.name
                out.add(r)
                if de.is_dir(follow_symlinks=False):
                    todo.append(r)
    return out


def check_against_kernel(stack: LayerStack, mnt: str) -> None:
    kt = kernel_tree(mnt)
    ot = offline_tree(stack)
    assert ot == kt, _tree_diff(kt, ot)
    with LayerReader([la.path for la in stack.layers], stack.xattr_prefix) as rd:
        ctx = LookupContext(stack, rd)
        for rel in sorted(layer_paths(stack)):
            try:
                os.lstat(os.path.join(mnt, rel))
                k_visible = True
            except OSError:
                k_visible = False
            ex = explain_path(stack, rd, "/" + rel, ctx=ctx)
            assert ex.visible == k_visible, (rel, ex.verdict, ex.message, ex.steps)
            if not ex.visible:
                assert ex.verdict not in ("visible", "unknown"), (rel, ex)


def _tree_diff(kt: dict, ot: dict) -> str:
    lines = []
    for k in sorted(set(kt) | set(ot)):
        if kt.get(k) != ot.get(k):
            lines.append(f"{k}: kernel={kt.get(k)} offline={ot.get(k)}")
    return "\n".join(lines[:40])


# --------------------------------------------------------------------------------------------
# the generator

LEAF_KINDS = ["file", "file", "symlink", "chardev_wh", "xattr_wh", "hardlink", "fifo"]


@st.composite
def nodes(draw: st.DrawFn, depth: int = 0) -> dict[str, Node]:
    out: dict[str, Node] = {}
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=3)):
        kinds = LEAF_KINDS + (["dir", "dir", "dir"] if depth < 3 else [])
        k = draw(st.sampled_from(kinds))
        if k == "dir":
            out[name] = Node("dir", mode=draw(st.sampled_from([0o755, 0o700, 0o1777])),
                             opaque=draw(st.sampled_from([None, None, None, b"y", b"x", b"yes", b""])),
                             children=draw(nodes(depth + 1)))
        elif k == "file":
            out[name] = Node("file", content=draw(st.sampled_from(CONTENTS)), mode=draw(st.sampled_from([0o644, 0o600, 0o755])))
        elif k == "symlink":
            # relative targets that stay inside the mount, so the host's lstat resolves them
            # the way the merged root does (a loop included); no "..": at the mount root the host
            # goes above the mount where a container (and ovlinspect) stays at its root
            out[name] = Node("symlink", target=draw(st.sampled_from(["a", "b", "c/a", "a/b/c", "b/a", "."])))
        else:
            out[name] = Node(k, content=b"x")
    return out


@st.composite
def stacks(draw: st.DrawFn) -> tuple[bool, list[dict[str, Node]], bool]:
    n = draw(st.integers(1, 6))
    with_upper = draw(st.booleans())
    if with_upper and n < 2:
        n = 2
    userxattr = draw(st.sampled_from([False, False, False, True]))
    return with_upper, [draw(nodes()) for _ in range(n)], userxattr


def mount_and_check(with_upper: bool, trees: list[dict[str, Node]], userxattr: bool = False) -> None:
    """Build, mount (with `userxattr`: markers under user.overlay.*), compare, unmount."""
    from ovl import mount_legacy, umount

    tmp = tempfile.mkdtemp(prefix="ovl-diff-")
    try:
        dirs = []
        for i, t in enumerate(trees):
            d = os.path.join(tmp, f"L{i}")
            build_layer(d, t, "user.overlay." if userxattr else "trusted.overlay.")
            dirs.append(d)
        extra = "userxattr" if userxattr else ""
        opts = {"userxattr": "on", "redirect_dir": "nofollow"} if userxattr else {}
        mnt = os.path.join(tmp, "m")
        os.mkdir(mnt)
        if with_upper:
            work = os.path.join(tmp, "w")
            os.mkdir(work)
            mount_legacy(mnt, dirs[1:], upper=dirs[0], work=work, extra=extra)
            stack = make_stack(dirs[1:], dirs[0], opts)
        else:
            if len(dirs) == 1:
                # one lower alone cannot be mounted: add an empty one below
                empty = os.path.join(tmp, "empty")
                os.mkdir(empty)
                dirs.append(empty)
            mount_legacy(mnt, dirs, extra=extra)
            stack = make_stack(dirs, None, opts)
        try:
            check_against_kernel(stack, mnt)
        finally:
            umount(mnt)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.skipif(not IS_ROOT, reason="needs root: real overlay mounts and trusted.* xattrs")
@settings(max_examples=int(os.environ.get("OVL_DIFF_EXAMPLES", "400")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stacks())
def test_random_stacks_match_kernel(case: tuple[bool, list[dict[str, Node]], bool]) -> None:
    with_upper, trees, userxattr = case
    mount_and_check(with_upper, trees, userxattr)
