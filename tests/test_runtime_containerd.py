"""Runtime tier, containerd: a real containerd with an isolated root; answers against `ctr`'s own."""

from __future__ import annotations

import json
import os
import re

import pytest
from engines import CTD_HISTORY, containerd_engine  # noqa: F401
from typer.testing import CliRunner

from ovlinspect.cli import app
from ovlinspect.hostfs import HostRoots
from ovlinspect.runtimes import find_orphans, stack_for_named
from ovlinspect.runtimes.discovery import RootOverrides

pytestmark = [pytest.mark.runtime]
runner = CliRunner()


def pinned(c) -> HostRoots:  # type: ignore[no-untyped-def]
    return HostRoots(runtime_overrides=RootOverrides(containerd=(c.root,)))


def ctr_mount_layers(c, key: str) -> tuple[str | None, list[str]]:  # type: ignore[no-untyped-def]
    """(upperdir, lowerdirs) from `ctr snapshots mounts`."""
    out = c.ctr("snapshots", "mounts", "/MNT", key)
    opts = re.search(r"-o (\S+)", out).group(1)  # type: ignore[union-attr]
    kv = dict(o.split("=", 1) for o in opts.split(",") if "=" in o)
    return kv.get("upperdir"), kv.get("lowerdir", "").split(":")


def test_discovery_from_the_running_containerd(containerd_engine) -> None:  # noqa: F811
    from ovlinspect.runtimes.discovery import discover_roots

    rr = discover_roots()
    found = [r for r in rr.containerd if os.path.realpath(r.path) == os.path.realpath(containerd_engine.root)]
    assert found and found[0].daemon_pid == containerd_engine.proc.pid and "--config" in found[0].source


def test_ls_owner_and_layers_match_ctr(containerd_engine) -> None:  # noqa: F811
    c = containerd_engine
    name = c.names["running"]
    res = runner.invoke(app, ["ls", "--json"])
    assert res.exit_code in (0, 3), res.output
    hits = [m for m in json.loads(res.stdout)["mounts"] if (m.get("owner") or {}).get("container_id") == name]
    assert len(hits) == 1
    m = hits[0]
    assert m["owner"]["runtime"] == "containerd" and m["owner"]["image_ref"] == c.image
    assert m["owner"]["details"]["namespace"] == c.namespace
    upper, lowers = ctr_mount_layers(c, name)
    assert m["upperdir"] == upper and m["lowerdirs"] == lowers
    ids = [la["identity"]["snapshot-id"] for la in m["layers"]]
    assert ids == [p.split("/")[-2] for p in [upper, *lowers]]
    assert m["layers"][0]["identity"]["snapshot-key"] == name and m["layers"][0]["identity"]["kind"] == "active"


def test_created_container_and_image_stacks(containerd_engine) -> None:  # noqa: F811
    c = containerd_engine
    name = c.names["created"]
    upper, lowers = ctr_mount_layers(c, name)
    st = stack_for_named(pinned(c), container=name)
    assert [la.path for la in st.layers] == [upper, *lowers]
    notes = {i: n.get("created_by") for i, n in st.layer_notes.items()}
    assert notes == {1: CTD_HISTORY[2], 2: CTD_HISTORY[1], 3: CTD_HISTORY[0]}
    img = stack_for_named(pinned(c), image="ovl-test/ctd:1")
    assert [la.path for la in img.layers] == lowers
    # the layer the RUN step deleted /data/delete-me.txt in holds the kernel's whiteout for it
    wh = os.lstat(os.path.join(img.layers[1].path, "data", "delete-me.txt"))
    assert (wh.st_mode & 0o170000) == 0o020000 and wh.st_rdev == 0


def test_why_missing_names_the_history_step(containerd_engine) -> None:  # noqa: F811
    res = runner.invoke(app, ["why-missing", "--container", containerd_engine.names["created"], "--json", "/data/delete-me.txt"])
    assert res.exit_code == 1, res.output
    r = json.loads(res.stdout)["results"][0]
    assert r["visible"] is False and r["verdict"] == "whiteout"
    assert r["layer"]["note"]["created_by"] == CTD_HISTORY[1]


def test_snapshot_usage_matches_ctr(containerd_engine) -> None:  # noqa: F811
    """`ovlinspect du --container` allocated bytes per layer = `ctr snapshots usage` (block-based)."""
    c = containerd_engine
    out = c.ctr("snapshots", "usage")
    st = stack_for_named(pinned(c), container=c.names["created"])
    key_of = {la.path: la.identity["snapshot-key"] for la in st.layers}
    res = runner.invoke(app, ["du", "--per-layer", "--json", "--container", c.names["created"]])
    assert res.exit_code == 0, res.output
    ours = {key_of[la["path"]]: la["allocated_bytes"] for la in json.loads(res.stdout)["layers"]}
    assert len(ours) == len(st.layers)
    checked = 0
    for line in out.splitlines()[1:]:
        parts = line.split()
        if parts and parts[0] in ours:
            n, unit = float(parts[1]), parts[2]  # "4.0 KiB": one decimal, binary units
            mult = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}[unit]
            assert abs(ours[parts[0]] - n * mult) <= 0.05 * mult, (parts, ours[parts[0]])  # within ctr's rounding
            checked += 1
    assert checked == len(ours)


def test_orphans_unknown_snapshot_dirs(containerd_engine) -> None:  # noqa: F811
    c = containerd_engine
    rep, _ = find_orphans(pinned(c), min_age_seconds=0)
    assert rep.findings == [], rep.findings
    sdir = os.path.join(c.root, "io.containerd.snapshotter.v1.overlayfs", "snapshots")
    leaked = os.path.join(sdir, "9999")
    temp = os.path.join(sdir, "new-123456")
    for d in (leaked, temp):
        os.makedirs(os.path.join(d, "fs"))
        with open(os.path.join(d, "fs", "x"), "w") as fh:
            fh.write("x" * 10000)
    try:
        rep, _ = find_orphans(pinned(c), min_age_seconds=0)
        assert sorted((f.path, f.kind) for f in rep.orphans) == sorted([(temp, "temp-dir"), (leaked, "layer-dir")])
        # while containerd runs, young dirs are only "unknown"
        young, _ = find_orphans(pinned(c), min_age_seconds=3600)
        assert young.orphans == [] and len(young.unknown) == 2
    finally:
        import shutil

        shutil.rmtree(leaked)
        shutil.rmtree(temp)


def test_bbolt_reader_on_a_multi_page_database(containerd_engine) -> None:  # noqa: F811
    """Enough snapshots that the snapshotter's bbolt tree needs branch pages: every one is read
    with the id and parent `ctr snapshots ls` / `ctr snapshots info` report."""
    from ovlinspect.runtimes.bbolt import BoltDB
    from ovlinspect.runtimes.containerd import ContainerdRuntime
    from ovlinspect.runtimes.discovery import FoundRoot

    c = containerd_engine
    parent = c.names["created"]
    parent_key = stack_for_named(pinned(c), container=parent).layers[1].identity["snapshot-key"]
    for i in range(150):
        c.ctr("snapshots", "prepare", f"bulk-{i:03d}-{'x' * 60}", parent_key)
    db = BoltDB.open(os.path.join(c.root, "io.containerd.snapshotter.v1.overlayfs", "metadata.db"))
    # the snapshots bucket really has more than one level now: a branch page above its leaves
    import struct

    value = next(v for k, v, is_bucket in db.items(b"v1") if k == b"snapshots" and is_bucket)
    bucket_root = struct.unpack_from("<Q", value, 0)[0]
    assert bucket_root != 0  # not an inline bucket
    assert struct.unpack_from("<QHHI", db.data, bucket_root * db.page_size)[1] == 0x01  # branch page
    rt = ContainerdRuntime(FoundRoot(c.root, "test"))
    ours = {s.key: (s.kind, s.parent.split("/", 2)[2] if s.parent else "") for s in rt.snaps.values() if s.namespace == c.namespace}
    theirs = {}
    for line in c.ctr("snapshots", "ls").splitlines()[1:]:
        parts = line.split()
        theirs[parts[0]] = (parts[-1].lower(), parts[1] if len(parts) == 3 else "")
    assert ours == theirs and sum(k.startswith("bulk-") for k in ours) == 150
    pages = len(db.data) // db.page_size
    assert pages > 8, pages
    info = json.loads(c.ctr("snapshots", "info", f"bulk-149-{'x' * 60}"))
    s = next(s for s in rt.snaps.values() if s.key == f"bulk-149-{'x' * 60}")
    assert info["Kind"] == "Active" and s.kind == "active" and os.path.isdir(rt.snap_dir(s.id))
