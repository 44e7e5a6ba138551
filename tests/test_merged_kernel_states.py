"""Kernel-made markers: the kernel writes the whiteouts, opaque dirs, redirects and metacopy files.

Mount with redirect_dir=on,metacopy=on,index=on; rm, rm -rf + mkdir, mv lower dirs (redirect),
chmod (metadata-only copy-up), append (data copy-up), ln, ln -s; compare the kernel's merged
view with the offline one (tree + why-missing for every layer path); unmount, rotate the upper
into the lower stack, mount again on a fresh upper, repeat.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile

import pytest
from test_differential_kernel import Node, build_layer, check_against_kernel, make_stack

from ovlinspect.analysis.lookup import LookupContext
from ovlinspect.analysis.merged import Change, diff_top
from ovlinspect.layers import LayerReader

pytestmark = [pytest.mark.kernel]
IS_ROOT = os.geteuid() == 0

OPTS = "redirect_dir=on,metacopy=on,index=on"


def base_tree() -> dict[str, Node]:
    def files(n: int) -> dict[str, Node]:
        return {f"f{i}": Node("file", content=f"data {i}\n".encode() * (i + 1), mode=0o644) for i in range(n)}

    t: dict[str, Node] = {f"d{i}": Node("dir", mode=0o755, children=files(3)) for i in range(4)}
    t["d0"].children["sub"] = Node("dir", mode=0o755, children=files(2))
    t["d1"].children["deep"] = Node("dir", mode=0o755, children={"x": Node("dir", mode=0o755, children=files(2))})
    t.update(files(4))
    t["link"] = Node("symlink", target="d0/f1")
    return t


def walk_mount(mnt: str) -> tuple[list[str], list[str]]:
    files, dirs = [], []
    for root, ds, fs in os.walk(mnt):
        rel = os.path.relpath(root, mnt)
        for d in ds:
            p = os.path.normpath(os.path.join(rel, d))
            if not os.path.islink(os.path.join(mnt, p)):
                dirs.append(p)
        for f in fs:
            p = os.path.normpath(os.path.join(rel, f))
            # hard-linked files are left alone once linked: with index=on the kernel shows a lower
            # alias with the data of the copy-up made through another alias (found through the
            # index dir in the workdir, by file handle); ovlinspect does not model that (README)
            if not os.path.islink(os.path.join(mnt, p)) and os.lstat(os.path.join(mnt, p)).st_nlink == 1:
                files.append(p)
    return sorted(files), sorted(dirs)


def mutate(mnt: str, rng: random.Random, round_no: int) -> None:
    for step in range(12):
        files, dirs = walk_mount(mnt)
        op = rng.choice(["rm", "rmrf_mkdir", "mv_dir", "chmod", "append", "new", "ln", "symlink", "mv_file", "rmdir_tree"])
        tag = f"r{round_no}s{step}"
        if op == "rm" and files:
            os.unlink(os.path.join(mnt, rng.choice(files)))
        elif op == "rmrf_mkdir" and dirs:
            d = rng.choice(dirs)
            shutil.rmtree(os.path.join(mnt, d))
            os.mkdir(os.path.join(mnt, d))  # the kernel makes it opaque
            with open(os.path.join(mnt, d, f"new-{tag}"), "w") as f:
                f.write(tag)
        elif op == "rmdir_tree" and dirs:
            shutil.rmtree(os.path.join(mnt, rng.choice(dirs)))
        elif op == "mv_dir" and dirs:
            d = rng.choice(dirs)
            dst = os.path.join(os.path.dirname(d), f"moved-{tag}")
            os.rename(os.path.join(mnt, d), os.path.join(mnt, dst))  # redirect_dir=on: a redirect
        elif op == "mv_file" and files:
            f0 = rng.choice(files)
            os.rename(os.path.join(mnt, f0), os.path.join(mnt, f"{f0}-mv{tag}"))
        elif op == "chmod" and files:
            os.chmod(os.path.join(mnt, rng.choice(files)), 0o600)  # metacopy=on: metadata-only copy-up
        elif op == "append" and files:
            with open(os.path.join(mnt, rng.choice(files)), "a") as f:
                f.write(tag)
        elif op == "new":
            base = rng.choice(dirs + ["."])
            with open(os.path.join(mnt, base, f"n-{tag}"), "w") as f:
                f.write(tag * 3)
        elif op == "ln" and files:
            src = rng.choice(files)
            os.link(os.path.join(mnt, src), os.path.join(mnt, f"hl-{tag}"))
        elif op == "symlink":
            os.symlink(rng.choice(files + dirs + ["nowhere"]), os.path.join(mnt, f"sl-{tag}"))


@pytest.mark.skipif(not IS_ROOT, reason="needs root: real overlay mounts and trusted.* xattrs")
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_kernel_made_markers_rotating_uppers(seed: int) -> None:
    from ovl import mount_legacy, umount

    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="ovl-states-")
    try:
        base = os.path.join(tmp, "base")
        build_layer(base, base_tree())
        lowers = [base]
        seen_markers = set()
        for rnd in range(4):
            upper, work, mnt = (os.path.join(tmp, f"{x}{rnd}") for x in ("u", "w", "m"))
            for d in (upper, work, mnt):
                os.mkdir(d)
            mount_legacy(mnt, lowers, upper=upper, work=work, extra=OPTS)
            try:
                mutate(mnt, rng, rnd)
                stack = make_stack(lowers, upper, {"redirect_dir": "on", "metacopy": "on", "index": "on"})
                check_against_kernel(stack, mnt)
                # the diff of the top layer is well-formed, and names what the kernel made
                with LayerReader([la.path for la in stack.layers], stack.xattr_prefix) as rd:
                    changes = [c for c in diff_top(LookupContext(stack, rd)) if isinstance(c, Change)]
                for c in changes:
                    seen_markers.add(c.how)
                    assert c.change in ("added", "changed", "deleted")
            finally:
                umount(mnt)
            # the finished upper becomes the top lower layer of the next round
            lowers = [upper] + lowers
        # the rounds really made the kernel write markers
        assert {"whiteout", "new"} <= seen_markers, seen_markers
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.skipif(not IS_ROOT, reason="needs root: real overlay mounts and trusted.* xattrs")
def test_redirect_and_metacopy_made_by_kernel_are_read() -> None:
    """A deterministic round: mv of a lower dir and chmod of a lower file, then the stack offline."""
    from ovl import mount_legacy, umount

    from ovlinspect.analysis.lookup import explain_path

    tmp = tempfile.mkdtemp(prefix="ovl-states-")
    try:
        base = os.path.join(tmp, "base")
        build_layer(base, base_tree())
        upper, work, mnt = (os.path.join(tmp, x) for x in ("u", "w", "m"))
        for d in (upper, work, mnt):
            os.mkdir(d)
        mount_legacy(mnt, [base], upper=upper, work=work, extra=OPTS)
        try:
            os.rename(os.path.join(mnt, "d1"), os.path.join(mnt, "renamed"))
            os.chmod(os.path.join(mnt, "f2"), 0o600)
            shutil.rmtree(os.path.join(mnt, "d2"))
            os.mkdir(os.path.join(mnt, "d2"))
            os.unlink(os.path.join(mnt, "f3"))
            stack = make_stack([base], upper, {"redirect_dir": "on", "metacopy": "on", "index": "on"})
            check_against_kernel(stack, mnt)
            with LayerReader([la.path for la in stack.layers], stack.xattr_prefix) as rd:
                assert rd.entry(0, ("renamed",)).redirect == "d1"
                assert rd.entry(0, ("f2",)).metacopy
                assert rd.entry(0, ("d2",)).opaque == "y"
                assert rd.entry(0, ("f3",)).chardev_whiteout
                ex = explain_path(stack, rd, "/renamed/deep/x/f1")
                assert ex.visible and ex.layer == 1, ex
                ex = explain_path(stack, rd, "/f2")
                assert ex.visible and ex.layer == 0 and ex.data_layer == 1, ex
                ex = explain_path(stack, rd, "/d1/f0")
                assert ex.verdict == "whiteout" and ex.layer == 0, ex
                ex = explain_path(stack, rd, "/d2/f0")
                assert ex.verdict == "opaque_parent" and ex.layer == 0, ex
                ex = explain_path(stack, rd, "/f3")
                assert ex.verdict == "whiteout", ex
                hows = {("/".join(c.path), c.how) for c in diff_top(LookupContext(stack, rd)) if isinstance(c, Change)}
            assert ("renamed", "renamed") in hows, hows
            assert ("f2", "metacopy") in hows
            assert ("d2", "opaque_replacement") in hows
            assert ("d2/f0", "hidden_by_opaque") in hows
            assert ("f3", "whiteout") in hows
            assert ("d1", "whiteout") in hows
        finally:
            umount(mnt)
        # the same stack mounted with redirect_dir=nofollow: the kernel refuses the redirect (EPERM)
        lower2 = [upper, base]
        mnt2, up2, w2 = (os.path.join(tmp, x) for x in ("m2", "u2", "w2"))
        for d in (mnt2, up2, w2):
            os.mkdir(d)
        mount_legacy(mnt2, lower2, extra="redirect_dir=nofollow,metacopy=off")
        try:
            stack2 = make_stack(lower2, None, {"redirect_dir": "nofollow", "metacopy": "off"})
            check_against_kernel(stack2, mnt2)
            with LayerReader([la.path for la in stack2.layers], stack2.xattr_prefix) as rd:
                assert explain_path(stack2, rd, "/renamed").verdict == "redirect_not_followed"
                assert explain_path(stack2, rd, "/f2").verdict == "metacopy_not_enabled"
        finally:
            umount(mnt2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.skipif(not IS_ROOT, reason="needs root: real overlay mounts and trusted.* xattrs")
def test_data_only_layers_and_metacopy_redirects() -> None:
    """lowerdir=L::D with metacopy=on: a metacopy file whose absolute redirect names its data in a
    data-only layer; one whose data is missing (stat works, open fails with ENOENT); a path that only
    the data-only layer has (never visible)."""
    from ovl import mount_legacy, umount

    from ovlinspect.analysis.lookup import explain_path

    tmp = tempfile.mkdtemp(prefix="ovl-data-")
    try:
        low, data, m = (os.path.join(tmp, x) for x in ("low", "data", "m"))
        for d in (low, data, m):
            os.mkdir(d)
        os.makedirs(os.path.join(data, "blobs"))
        with open(os.path.join(data, "blobs", "ab"), "wb") as f:
            f.write(b"the data\n" * 100)
        with open(os.path.join(data, "only-here"), "w") as f:
            f.write("x")
        for name, target in (("m", "/blobs/ab"), ("m2", "/blobs/none")):
            p = os.path.join(low, name)
            with open(p, "wb") as f:
                f.truncate(900)
            os.setxattr(p, "trusted.overlay.metacopy", b"")
            os.setxattr(p, "trusted.overlay.redirect", target.encode())
        mount_legacy(m, [low], data_only=[data], extra="metacopy=on,redirect_dir=follow")
        try:
            stack = make_stack([low], None, {"metacopy": "on"}, data_dirs=[data])
            check_against_kernel(stack, m)
            with LayerReader([la.path for la in stack.layers], stack.xattr_prefix) as rd:
                ex = explain_path(stack, rd, "/m")
                assert ex.visible and ex.data_layer == 1, ex
                assert explain_path(stack, rd, "/m2").visible  # lookup is fine, open is not
                ex = explain_path(stack, rd, "/only-here")
                assert ex.verdict == "not_found" and "data-only layer 1" in ex.message
                from ovlinspect.analysis.lookup import LookupContext as _Ctx
                from ovlinspect.analysis.whiteouts import Finding, scan_markers

                ids = {(f.id, "/".join(f.path)) for f in scan_markers(_Ctx(stack, rd)) if isinstance(f, Finding)}
                assert ("metacopy_without_data", "m2") in ids and ("metacopy_without_data", "m") not in ids, ids
        finally:
            umount(m)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
