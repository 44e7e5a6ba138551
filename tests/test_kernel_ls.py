"""Kernel tier: real overlay mounts (private mount namespace) decoded by `ovlinspect ls --json`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from ovl import mount_legacy, mount_newapi
from typer.testing import CliRunner

from ovlinspect.cli import app

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("root_required")]

HOSTILE = [
    b"sp ace",
    b"t\tab",
    b"new\nline",
    b"com,ma",
    b"co:lon",
    b"back\\slash",
    b"eq=ual",
    b"non-utf8-\xff\xfe",
    b"-leading-dash",
    b"quo\"te",
    b"mix \t,:=\\\xc3(",
]


def _ls_json(*extra: str) -> dict:
    res = CliRunner().invoke(app, ["ls", "--json", *extra])
    assert res.exit_code in (0, 3), res.output
    return json.loads(res.stdout)


def _by_mountpoint(doc: dict, mp: bytes) -> dict:
    want = os.fsdecode(mp)
    hits = [m for m in doc["mounts"] if _path(m, "mountpoint") == want]
    assert len(hits) == 1, [m["mountpoint"] for m in doc["mounts"]]
    return hits[0]


def _path(rec: dict, key: str) -> str:
    """Undo the JSON encoding of a path: <key>_b64 holds the exact bytes when not UTF-8."""
    import base64

    if rec.get(key + "_b64"):
        return os.fsdecode(base64.b64decode(rec[key + "_b64"]))
    return rec[key]


def _paths(rec: dict, key: str) -> list[str]:
    import base64

    b64 = rec.get(key + "_b64") or [None] * len(rec[key])
    return [os.fsdecode(base64.b64decode(b)) if b else s for s, b in zip(rec[key], b64, strict=True)]


@pytest.fixture
def tmpb(tmp_path):
    base = os.fsencode(str(tmp_path))
    yield base
    # lazily detach anything still mounted below tmp_path
    with open("/proc/self/mountinfo", "rb") as fh:
        for line in reversed(fh.read().split(b"\n")):
            f = line.split(b" ")
            if len(f) > 4 and f[4].startswith(base):
                subprocess.run(["umount", "-l", f[4].decode("unicode_escape").encode("latin-1")], check=False)


def _mk(base: bytes, *names: bytes) -> list[bytes]:
    out = []
    for n in names:
        p = os.path.join(base, n)
        os.makedirs(p, exist_ok=True)
        out.append(p)
    return out


def test_hostile_names_legacy_mount(tmpb: bytes) -> None:
    lowers = _mk(tmpb, *[b"lo-" + n for n in HOSTILE])
    up, wk, mnt = _mk(tmpb, b"up per,x\\y", b"wo:rk", b"m nt\t\xff")
    mount_legacy(mnt, lowers, up, wk)
    m = _by_mountpoint(_ls_json(), mnt)
    assert _paths(m, "lowerdirs") == [os.fsdecode(p) for p in lowers]
    assert _path(m, "upperdir") == os.fsdecode(up)
    assert _path(m, "workdir") == os.fsdecode(wk)
    assert m["datadirs"] == [] and m["api"] == "legacy"
    assert all(la["exists"] is True for la in m["layers"])
    assert m["flags"] == []


def test_hostile_names_new_mount_api(tmpb: bytes) -> None:
    lowers = _mk(tmpb, *[b"nl-" + n for n in HOSTILE])
    datas = _mk(tmpb, b"data one,\\:", b"data-\xfe")
    up, wk, mnt = _mk(tmpb, b"up\\sl ash", b"w,k", b"mnt-new")
    mount_newapi(mnt, lowers, up, wk, data_only=datas)
    m = _by_mountpoint(_ls_json(), mnt)
    assert m["api"] == "new"
    assert _paths(m, "lowerdirs") == [os.fsdecode(p) for p in lowers]
    assert _paths(m, "datadirs") == [os.fsdecode(p) for p in datas]
    assert _path(m, "upperdir") == os.fsdecode(up)
    assert [la["role"] for la in m["layers"]] == ["upper"] + ["lower"] * len(lowers) + ["data-only"] * len(datas)


def test_data_only_layers_legacy_syntax(tmpb: bytes) -> None:
    lowers = _mk(tmpb, b"l1", b"l:2")
    datas = _mk(tmpb, b"d,1", b"d 2")
    (mnt,) = _mk(tmpb, b"mnt")
    mount_legacy(mnt, lowers, data_only=datas)
    m = _by_mountpoint(_ls_json(), mnt)
    assert _paths(m, "lowerdirs") == [os.fsdecode(p) for p in lowers]
    assert _paths(m, "datadirs") == [os.fsdecode(p) for p in datas]
    assert m["upperdir"] is None and "lower-only" in m["state"]


def test_userxattr_and_effective_defaults(tmpb: bytes) -> None:
    lo, up, wk, mnt = _mk(tmpb, b"lo", b"up", b"wk", b"mnt")
    mount_legacy(mnt, [lo], up, wk, extra="userxattr")
    m = _by_mountpoint(_ls_json(), mnt)
    assert m["effective"]["userxattr"] == "on" and m["effective_source"]["userxattr"] == "mount"
    params = {}
    pdir = "/sys/module/overlay/parameters"
    for name in os.listdir(pdir):
        params[name] = open(os.path.join(pdir, name)).read().strip()
    if "index" not in m["options"]:
        assert m["effective"]["index"] == ("on" if params["index"] == "Y" else "off")
        assert m["effective_source"]["index"] == "module-default"
    assert m["effective"]["xino"] == m["options"].get("xino", "auto" if params["xino_auto"] == "Y" else "off")


def test_many_lowers_new_api(tmpb: bytes) -> None:
    lowers = _mk(tmpb, *[b"L%03d" % i for i in range(130)])
    (mnt,) = _mk(tmpb, b"mnt")
    mount_newapi(mnt, lowers)  # no one-page limit on the options with fsconfig
    m = _by_mountpoint(_ls_json(), mnt)
    assert _paths(m, "lowerdirs") == [os.fsdecode(p) for p in lowers]
    assert "lower_count_near_docker_limit" in {f["id"] for f in m["flags"]}


def test_many_lowers_relative_legacy(tmpb: bytes) -> None:
    """mount(2) data is one page: 130 layers fit only as short relative paths (made from the
    mount point's parent, as people do by hand); they resolve against that directory."""
    lowers = _mk(tmpb, *[b"R%03d" % i for i in range(130)])
    (mnt,) = _mk(tmpb, b"mnt")
    cwd = os.getcwd()
    os.chdir(tmpb)
    try:
        mount_legacy(b"mnt", [os.path.basename(p) for p in lowers])
    finally:
        os.chdir(cwd)
    m = _by_mountpoint(_ls_json(), mnt)
    assert _paths(m, "lowerdirs") == [os.fsdecode(p) for p in lowers]
    assert [la["written"] for la in m["layers"]] == [os.fsdecode(os.path.basename(p)) for p in lowers]
    assert all(la["exists"] for la in m["layers"])


def test_relative_docker_style_paths_resolved(tmpb: bytes) -> None:
    """Docker mounts long chains with l/XXXX and <id>/diff relative to its home (chdir'd there)."""
    home = os.path.join(tmpb, b"overlay2")
    ids = [b"%064x" % i for i in range(1, 60)]
    for i in ids:
        os.makedirs(os.path.join(home, i, b"diff"))
    os.makedirs(os.path.join(home, b"l"))
    links = []
    for n, i in enumerate(ids[1:]):
        link = b"L%024d" % n
        os.symlink(b"../" + i + b"/diff", os.path.join(home, b"l", link))
        links.append(b"l/" + link)
    top = ids[0]
    os.makedirs(os.path.join(home, top, b"work"))
    os.makedirs(os.path.join(home, top, b"merged"))
    cwd = os.getcwd()
    os.chdir(home)
    try:
        mount_legacy(top + b"/merged", links, top + b"/diff", top + b"/work", escape=False)
    finally:
        os.chdir(cwd)
    m = _by_mountpoint(_ls_json(), os.path.join(home, top, b"merged"))
    assert m["lowerdirs"] == [os.fsdecode(os.path.join(home, x)) for x in links]
    assert m["upperdir"] == os.fsdecode(os.path.join(home, top, b"diff"))
    assert m["workdir"] == os.fsdecode(os.path.join(home, top, b"work"))
    assert [la["written"] for la in m["layers"][1:]] == [os.fsdecode(x) for x in links]
    assert all(la["exists"] and la["resolved"] for la in m["layers"])
    assert "runtime home" in m["layers"][1]["resolution"]


def test_missing_layer_and_volatile_marker(tmpb: bytes) -> None:
    lo1, lo2, up, wk, mnt = _mk(tmpb, b"lo1", b"lo2", b"up", b"wk", b"mnt")
    mount_legacy(mnt, [lo1, lo2], up, wk, extra="volatile")
    shutil.rmtree(lo2)
    m = _by_mountpoint(_ls_json(), mnt)
    flags = {f["id"]: f for f in m["flags"]}
    assert flags["layer_missing"]["severity"] == "critical"
    assert os.fsdecode(lo2) in flags["layer_missing"]["message"]
    assert [la["exists"] for la in m["layers"]] == [True, True, False]
    assert flags["volatile_marker"]["severity"] == "info"
    assert "volatile" in m["state"]
    res = CliRunner().invoke(app, ["ls", "-l"])
    assert "MISSING" in res.stdout and "layer_missing" in res.stdout


def test_findmnt_agrees(tmpb: bytes) -> None:
    """Cross-check: every overlay findmnt sees, with the same mount point and fs options."""
    lows = _mk(tmpb, b"a b", b"c,d", b"e:f")
    up, wk, mnt = _mk(tmpb, b"up", b"wk", b"mnt")
    mount_legacy(mnt, lows, up, wk, extra="redirect_dir=on")
    fm = json.loads(subprocess.run(["findmnt", "-J", "-t", "overlay", "-o", "ID,TARGET,FS-OPTIONS"], capture_output=True, check=True).stdout)
    doc = _ls_json()
    ours = {m["mount_id"]: m for m in doc["mounts"]}
    assert {f["id"] for f in fm["filesystems"]} == set(ours)
    for f in fm["filesystems"]:
        m = ours[f["id"]]
        assert m["mountpoint"] == f["target"]
        # findmnt decodes the octal escapes but keeps the user's \, and \: escapes
        opts = _split_backslash_commas(f["fs-options"])
        lw = [la["written"] for la in m["layers"] if la["role"] == "lower"]
        dw = [la["written"] for la in m["layers"] if la["role"] == "data-only"]
        if "lowerdir" in opts:
            assert opts.pop("lowerdir") == ":".join(lw) + "".join("::" + d for d in dw)
        up_w = [la["written"] for la in m["layers"] if la["role"] == "upper"]
        if "upperdir" in opts:
            assert [opts.pop("upperdir")] == up_w
            opts.pop("workdir")
        assert opts == m["options"]


def _split_backslash_commas(s: str) -> dict:
    out, cur, i = {}, "", 0
    parts = []
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s):
            cur += s[i : i + 2]
            i += 2
            continue
        if s[i] == ",":
            parts.append(cur)
            cur = ""
        else:
            cur += s[i]
        i += 1
    parts.append(cur)
    for p in parts:
        k, eq, v = p.partition("=")
        out[k] = v if eq else None
    return out


def test_other_mount_namespace_seen_with_all_namespaces(tmpb: bytes) -> None:
    lo, lo2, mnt = _mk(tmpb, b"ns-lo", b"ns-lo2", b"ns-mnt")
    ready = os.path.join(tmpb, b"ready")
    script = (
        b"mount -t overlay overlay -o lowerdir=" + lo + b":" + lo2 + b" " + mnt + b" && touch " + ready + b" && exec sleep 60"
    )
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script])
    try:
        for _ in range(100):
            if os.path.exists(ready):
                break
            time.sleep(0.05)
        assert os.path.exists(ready)
        own = _ls_json()
        assert os.fsdecode(mnt) not in [m["mountpoint"] for m in own["mounts"]]
        doc = _ls_json("--all-namespaces")
        hits = [m for m in doc["mounts"] if m["mountpoint"] == os.fsdecode(mnt)]
        assert len(hits) == 1
        ns = hits[0]["namespace"]
        assert ns["id"] == os.readlink(f"/proc/{proc.pid}/ns/mnt")
        assert ns["pid"] is not None and os.readlink(f"/proc/{ns['pid']}/ns/mnt") == ns["id"]
        assert len({n["id"] for n in doc["namespaces"]}) == len(doc["namespaces"])
    finally:
        proc.kill()
        proc.wait()


def test_console_script_in_subprocess(tmpb: bytes) -> None:
    lo, lo2, mnt = _mk(tmpb, b"sub-lo", b"sub-lo2", b"sub \x1b[31mmnt")
    mount_legacy(mnt, [lo, lo2])
    exe = os.path.join(os.path.dirname(sys.executable), "ovlinspect")
    out = subprocess.run([exe, "ls"], capture_output=True, check=True).stdout
    assert b"\x1b" not in out and b"sub \\e[31mmnt" in out
