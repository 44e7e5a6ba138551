"""`whiteouts`: markers found on real layer dirs, every lint rule fired by a real layout, and the
ghost entries the kernel shows for xattr whiteouts outside opaque=x dirs (checked by mounting)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest
from test_differential_kernel import make_stack

from ovlinspect.analysis.lookup import LookupContext
from ovlinspect.analysis.whiteouts import Finding, Marker, scan_markers
from ovlinspect.layers import DictView, Entry, LayerReader

IS_ROOT = os.geteuid() == 0
T = "trusted.overlay."


@pytest.fixture
def world_tmp():
    """A temp dir an unprivileged user can reach (pytest's tmp_path lives under a 0700 dir)."""
    import pathlib

    d = tempfile.mkdtemp(prefix="ovl-nobody-")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


def _findings(stack, view) -> tuple[list[Marker], list[Finding]]:
    ctx = LookupContext(stack, view)
    ms, fs = [], []
    for it in scan_markers(ctx):
        if isinstance(it, Marker):
            ms.append(it)
        elif isinstance(it, Finding):
            fs.append(it)
    return ms, fs


def test_lint_rules_on_a_literal_stack() -> None:
    F = lambda n, **kw: Entry(n, "file", stat.S_IFREG | 0o644, kw.pop("size", 3), **kw)  # noqa: E731
    D = lambda n, **kw: Entry(n, "dir", stat.S_IFDIR | 0o755, 4096, **kw)  # noqa: E731
    W = lambda n: Entry(n, "chardev", stat.S_IFCHR, 0, rdev=0)  # noqa: E731
    view = DictView([
        {"gone": W("gone"), "nothing": W("nothing"), "op": D("op", opaque="y"), "op/w": W("w"),
         "bad": D("bad", opaque="yes"), "xu": D("xu", opaque="x"), ".wh.tarred": F(".wh.tarred"),
         "m": F("m", metacopy=True), "r": D("r", redirect="/missing")},
        {"gone": F("gone"), "xd": D("xd"), "xd/xw": F("xw", size=0, xwhiteout=True), "op/w": F("w")},
        {"low": W("low"), "xl": D("xl", opaque="x"), "d/.wh..wh..opq": F(".wh..wh..opq", size=0)},
    ])
    stack = make_stack(["/l1", "/l2"], "/u", {"metacopy": "on"})
    ms, fs = _findings(stack, view)
    ids = {(f.id, "/".join(f.path)) for f in fs}
    assert ("whiteout_hides_nothing", "nothing") in ids
    assert ("whiteout_hides_nothing", "gone") not in ids  # it hides layer 1's file
    assert ("whiteout_in_lowest_layer", "low") in ids
    assert ("whiteout_in_opaque_dir", "op/w") in ids
    assert ("opaque_bad_value", "bad") in ids
    assert ("opaque_x_ignored", "xu") in ids and ("opaque_x_ignored", "xl") in ids
    assert ("xattr_whiteout_outside_x_dir", "xd/xw") in ids
    assert ("tar_whiteout_on_disk", ".wh.tarred") in ids
    assert ("tar_opaque_on_disk", "d/.wh..wh..opq") in ids
    assert ("metacopy_without_data", "m") in ids
    assert ("redirect_target_missing", "r") in ids
    kinds = {(m.marker, "/".join(m.path)) for m in ms}
    assert ("xattr_whiteout", "xd/xw") in kinds and ("opaque", "op") in kinds and ("redirect", "r") in kinds


@pytest.mark.kernel
@pytest.mark.skipif(not IS_ROOT, reason="needs root: trusted.* xattrs and a real mount")
def test_xattr_whiteout_outside_x_dir_is_a_ghost_for_the_kernel_too() -> None:
    """What the lint claims, checked: readdir lists the name, stat says ENOENT; inside a middle
    lower's opaque=x dir it is filtered from readdir too."""
    from ovl import mount_legacy, umount

    tmp = tempfile.mkdtemp(prefix="ovl-wh-")
    try:
        l1, l2, l3, m = (os.path.join(tmp, x) for x in ("l1", "l2", "l3", "m"))
        for d in (l1, l2, l3, m):
            os.mkdir(d)
        for d in (l1, l2, l3):
            os.mkdir(os.path.join(d, "d"))
        for n in ("a", "b"):
            with open(os.path.join(l3, "d", n), "w") as f:
                f.write(n)
        for base, name, xdir in ((l1, "a", False), (l2, "b", True)):
            p = os.path.join(base, "d", name)
            open(p, "w").close()
            os.setxattr(p, T + "whiteout", b"")
            if xdir:
                os.setxattr(os.path.join(base, "d"), T + "opaque", b"x")
        mount_legacy(m, [l1, l2, l3])
        try:
            listed = set(os.listdir(os.path.join(m, "d")))
            assert "a" in listed and "b" not in listed
            with pytest.raises(FileNotFoundError):
                os.lstat(os.path.join(m, "d", "a"))
        finally:
            umount(m)
        stack = make_stack([l1, l2, l3], None)
        with LayerReader([l1, l2, l3]) as rd:
            _, fs = _findings(stack, rd)
        ids = {(f.id, "/".join(f.path)) for f in fs}
        assert ("xattr_whiteout_outside_x_dir", "d/a") in ids
        assert ("xattr_whiteout_outside_x_dir", "d/b") not in ids
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.kernel
@pytest.mark.skipif(not IS_ROOT, reason="needs root: trusted.* xattrs, and setpriv to drop them")
def test_cli_whiteouts_json_and_unknown_without_privilege(world_tmp) -> None:
    tmp_path = world_tmp
    up, low = tmp_path / "u", tmp_path / "l"
    (low / "d").mkdir(parents=True)
    (low / "d" / "f").write_text("x")
    (up / "d").mkdir(parents=True)
    os.setxattr(up / "d", T + "opaque", b"y")
    os.mknod(up / "gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    args = ["whiteouts", "--json", "--lowerdir", str(low), "--upperdir", str(up)]
    r = subprocess.run([sys.executable, "-m", "ovlinspect", *args], capture_output=True, text=True)
    doc = json.loads(r.stdout)
    assert doc["schema_version"] == 1 and doc["xattrs_readable"] is True
    assert {(m["marker"], m["path"]) for m in doc["markers"]} == {("opaque", "/d"), ("whiteout", "/gone")}
    assert r.returncode == 0  # only info findings (the whiteout hides nothing)
    assert any(f["id"] == "whiteout_hides_nothing" for f in doc["findings"])
    # without CAP_SYS_ADMIN trusted.* is invisible: the answer says unknown, never "not opaque"
    os.chmod(tmp_path, 0o755)
    code = f"import sys; from ovlinspect.cli import main; sys.argv=['ovlinspect', *{args!r}]; main()"
    r2 = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                         sys.executable, "-c", code], capture_output=True, text=True)
    doc2 = json.loads(r2.stdout)
    assert r2.returncode == 3 and doc2["xattrs_readable"] is False
    code_w = ("import sys; from ovlinspect.cli import main; sys.argv=['ovlinspect','why-missing','--json','--lowerdir',"
              f"{str(low)!r},'--upperdir',{str(up)!r},'/d/f']; main()")
    r3 = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                         sys.executable, "-c", code_w], capture_output=True, text=True)
    res = json.loads(r3.stdout)["results"][0]
    assert res["verdict"] == "unknown" and res["assumed_verdict"] == "visible" and r3.returncode == 3
    # as root the same path is hidden by the opaque dir
    r4 = subprocess.run([sys.executable, "-m", "ovlinspect", "why-missing", "--json", "--lowerdir", str(low),
                         "--upperdir", str(up), "/d/f"], capture_output=True, text=True)
    assert json.loads(r4.stdout)["results"][0]["verdict"] == "opaque_parent" and r4.returncode == 1
