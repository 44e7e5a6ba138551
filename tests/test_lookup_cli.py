"""CLI of the layer commands on live mounts: targets, covered_by_mount, JSON schema, hostile names, exit codes."""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile

import pytest
from typer.testing import CliRunner

from ovlinspect.cli import app

IS_ROOT = os.geteuid() == 0
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(not IS_ROOT, reason="needs root: real overlay mounts")]
runner = CliRunner()
HOSTILE = "evil\x1b]0;pwned\x07[red]x[bold]\nname"
NON_UTF8 = os.fsdecode(b"bad\xffname")


@pytest.fixture
def live():
    """A live overlay: upper with a whiteout (rm) and an opaque dir (rm -rf + mkdir), made by the kernel."""
    from ovl import mount_legacy, umount

    tmp = tempfile.mkdtemp(prefix="ovl-cli-")
    low, up, work, m = (os.path.join(tmp, x) for x in ("low", "up", "work", "m"))
    for d in (low, up, work, m):
        os.mkdir(d)
    os.makedirs(os.path.join(low, "etc", "conf.d"))
    for p in ("etc/hosts", "etc/conf.d/a", "etc/conf.d/b", "data", HOSTILE, NON_UTF8):
        with open(os.path.join(low, p), "w") as f:
            f.write("x\n")
    os.makedirs(os.path.join(low, "proc", "inner"))
    mount_legacy(m, [low], upper=up, work=work)
    os.unlink(os.path.join(m, "data"))
    shutil.rmtree(os.path.join(m, "etc", "conf.d"))
    os.mkdir(os.path.join(m, "etc", "conf.d"))
    with open(os.path.join(m, "etc", "new"), "w") as f:
        f.write("new\n")
    from ovl import _libc

    assert _libc.mount(b"tmpfs", os.path.join(m, "proc").encode(), b"tmpfs", 0, None) == 0
    yield m, low, up
    umount(os.path.join(m, "proc"))
    umount(m)
    shutil.rmtree(tmp, ignore_errors=True)


def test_why_missing_on_a_live_mount(live) -> None:
    m, low, up = live
    r = runner.invoke(app, ["why-missing", "--json", m, "/data", "/etc/conf.d/a", "/etc/hosts", "/proc/inner", "/etc/host"])
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    assert doc["schema_version"] == 1
    res = {x["path"]: x for x in doc["results"]}
    assert res["/data"]["verdict"] == "whiteout" and res["/data"]["layer"]["role"] == "upper"
    assert res["/etc/conf.d/a"]["verdict"] == "opaque_parent"
    assert res["/etc/hosts"]["visible"] and res["/etc/hosts"]["layer"] == {"index": 1, "role": "lower", "path": low}
    assert res["/proc/inner"]["verdict"] == "covered_by_mount"
    assert res["/etc/host"]["verdict"] == "not_found" and "hosts" in res["/etc/host"]["suggestions"]
    for x in doc["results"]:
        assert set(x) >= {"path", "visible", "verdict", "layer", "steps"}
    # a path under the mount as TARGET: relative PATHs are taken from there; alone, it is explained
    r2 = runner.invoke(app, ["why-missing", "--json", os.path.join(m, "etc"), "hosts"])
    assert r2.exit_code == 0 and json.loads(r2.stdout)["results"][0]["path"] == "/etc/hosts"
    r3 = runner.invoke(app, ["why-missing", os.path.join(m, "etc", "conf.d", "b")])
    assert r3.exit_code == 1 and "OPAQUE_PARENT" in r3.stdout


def test_tree_and_diff_on_a_live_mount_match_the_kernel(live) -> None:
    m, low, up = live
    r = runner.invoke(app, ["tree", "--json", m])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    got = {e["path"] for e in doc["entries"]}
    want = set()
    for root, dirs, files in os.walk(m):
        for n in dirs + files:
            rel = os.path.relpath(os.path.join(root, n), m)
            if not rel.startswith("proc/"):  # what the tmpfs on /proc holds is not from the layers
                want.add("/" + os.fsencode(rel).decode("utf-8", "replace"))
    want.add("/proc/inner")
    assert got == want
    cov = {e["path"]: e.get("covered_by_mount") for e in doc["entries"]}
    assert cov["/proc"] == "/proc" and cov["/proc/inner"] == "/proc" and cov["/etc/hosts"] is None
    bad = [e for e in doc["entries"] if "path_b64" in e]
    assert len(bad) == 1 and base64.b64decode(bad[0]["path_b64"]) == b"/bad\xffname"
    r2 = runner.invoke(app, ["tree", "--json", m, "/etc"])
    assert {e["path"] for e in json.loads(r2.stdout)["entries"]} == {"/etc/hosts", "/etc/new", "/etc/conf.d"}
    r3 = runner.invoke(app, ["diff", "--json", m])
    ch = {(c["path"], c["change"], c["how"]) for c in json.loads(r3.stdout)["changes"]}
    assert {("/data", "deleted", "whiteout"), ("/etc/conf.d", "changed", "opaque_replacement"),
            ("/etc/conf.d/a", "deleted", "hidden_by_opaque"), ("/etc/new", "added", "new")} <= ch
    r4 = runner.invoke(app, ["tree", m, "/nonexistent"])
    assert r4.exit_code == 4 and "not a directory of the merged view" in r4.output


def test_hostile_names_are_escaped_in_text(live) -> None:
    m, _, _ = live
    for args in (["tree", m], ["why-missing", m, "/" + HOSTILE], ["diff", m]):
        r = runner.invoke(app, args)
        assert "\x1b" not in r.stdout and "\x07" not in r.stdout, args
    r = runner.invoke(app, ["tree", m])
    assert "evil\\e]0;pwned\\x07[red]x[bold]\\nname" in r.stdout


def test_usage_errors() -> None:
    assert runner.invoke(app, ["why-missing"]).exit_code == 2
    assert runner.invoke(app, ["tree", "/", "a", "b", "--lowerdir", "/tmp"]).exit_code == 2
    r = runner.invoke(app, ["why-missing", "/definitely/not/here", "/x"])
    assert r.exit_code == 4 and "Traceback" not in r.output
