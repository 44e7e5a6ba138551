"""Runtime tier, podman: real podman with an isolated graph root; ovlinspect's answers against podman's own."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from engines import podman_engine  # noqa: F401
from typer.testing import CliRunner

from ovlinspect.cli import app
from ovlinspect.hostfs import HostRoots
from ovlinspect.runtimes import all_layer_dirs, find_orphans, stack_for_named
from ovlinspect.runtimes.discovery import RootOverrides

pytestmark = [pytest.mark.runtime]
runner = CliRunner()


def pinned(p) -> HostRoots:  # type: ignore[no-untyped-def]
    return HostRoots(runtime_overrides=RootOverrides(podman=(p.root,)))


def inspect(p, name: str) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(p.podman("inspect", name))[0]


def test_discovery_from_storage_conf_and_conmon(podman_engine, monkeypatch) -> None:  # noqa: F811
    from ovlinspect.runtimes.discovery import discover_roots

    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", podman_engine.conf)
    rr = discover_roots()
    srcs = {os.path.realpath(r.path): r for r in rr.podman}
    assert os.path.realpath(podman_engine.root) in srcs
    assert srcs[os.path.realpath(podman_engine.root)].run_root in (podman_engine.run_root, None) or True
    monkeypatch.delenv("CONTAINERS_STORAGE_CONF")
    # without the config file, the running container's conmon still names the root
    rr = discover_roots()
    found = [r for r in rr.podman if os.path.realpath(r.path) == os.path.realpath(podman_engine.root)]
    assert found and "conmon" in found[0].source and found[0].run_root == podman_engine.run_root


def test_ls_owner_and_layers_match_podman_inspect(podman_engine, monkeypatch) -> None:  # noqa: F811
    p = podman_engine
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", p.conf)
    info = inspect(p, p.names["running"])
    gd = info["GraphDriver"]["Data"]
    res = runner.invoke(app, ["ls", "--json"])
    assert res.exit_code in (0, 3), res.output
    mounts = [m for m in json.loads(res.stdout)["mounts"] if (m.get("owner") or {}).get("container_name") == p.names["running"]]
    assert len(mounts) == 1
    m = mounts[0]
    assert m["owner"]["runtime"] == "podman" and m["owner"]["container_id"] == info["Id"]
    assert m["owner"]["image_ref"] == "localhost/ovl-test/derived:1" and m["owner"]["image_id"] == info["Image"]
    assert m["mountpoint"] == gd["MergedDir"] and m["upperdir"] == gd["UpperDir"]
    assert [os.path.realpath(x) for x in m["lowerdirs"]] == [os.path.realpath(x) for x in gd["LowerDir"].split(":")]
    assert m["layers"][0]["identity"]["layer-id"] == os.path.basename(os.path.dirname(gd["UpperDir"]))
    assert all("layer-id" in la["identity"] for la in m["layers"])


def test_stopped_container_and_image_stacks(podman_engine) -> None:  # noqa: F811
    p = podman_engine
    gd = inspect(p, p.names["created"])["GraphDriver"]["Data"]
    st = stack_for_named(pinned(p), container=p.names["created"])
    assert st.layers[0].path == gd["UpperDir"]
    assert [la.path for la in st.layers[1:]] == [os.path.realpath(x) for x in gd["LowerDir"].split(":")]
    notes = [n.get("created_by") for _i, n in sorted(st.layer_notes.items())]
    assert "RUN rm /data/delete-me.txt" in notes and notes[0].startswith("COPY")
    img = stack_for_named(pinned(p), image="ovl-test/derived:1")
    assert [la.path for la in img.layers] == [la.path for la in st.layers[1:]]


@pytest.mark.parametrize("which", ["running", "created"])
def test_diff_matches_podman_diff(podman_engine, monkeypatch, which: str) -> None:  # noqa: F811
    p = podman_engine
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", p.conf)
    name = p.names[which]
    want = {(ln[0], ln[2:]) for ln in p.podman("diff", name).splitlines() if ln.strip()}
    res = runner.invoke(app, ["diff", "--json", "--container", name])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    letter = {"added": "A", "changed": "C", "deleted": "D"}
    # libpod/diff.go `initInodes`: paths podman itself creates for its bind mounts are left out of
    # `podman diff`; and a directory is "C" there only when its own metadata changed (archive.Changes),
    # while any dir in the upper counts for us (and for `docker diff`): compare dirs as a subset.
    init_inodes = {"/dev", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/proc", "/run", "/run/notify", "/run/.containerenv", "/run/secrets", "/sys", "/etc/mtab"}
    ours = {(letter[c["change"]], c["path"]) for c in doc["changes"] if c["path"] not in init_inodes}
    dirs = {c["path"] for c in doc["changes"] if c["type"] == "dir"}
    assert {x for x in ours if x[1] not in dirs} == {x for x in want if x[1] not in dirs}
    assert {x for x in want if x[1] in dirs} <= {x for x in ours if x[1] in dirs}
    assert {x for x in want if x[0] != "C"} <= ours


def test_why_missing_names_the_run_step(podman_engine, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", podman_engine.conf)
    res = runner.invoke(app, ["why-missing", "--container", podman_engine.names["created"], "--json", "/data/delete-me.txt"])
    r = json.loads(res.stdout)["results"][0]
    assert r["visible"] is False and r["layer"]["note"]["created_by"] == "RUN rm /data/delete-me.txt"


def test_layer_dirs_and_no_orphans(podman_engine) -> None:  # noqa: F811
    p = podman_engine
    dirs = dict(all_layer_dirs(pinned(p)))
    upper = inspect(p, p.names["running"])["GraphDriver"]["Data"]["UpperDir"]
    assert dirs[upper] == f"podman container {p.names['running']} (upper)"
    rep, _ = find_orphans(pinned(p), min_age_seconds=0)
    assert rep.findings == [], rep.findings


def test_orphan_after_layers_json_loses_a_layer(podman_engine, tmp_path) -> None:  # noqa: F811
    """A layer dir whose layers.json record is gone (hand-edited, as after an interrupted delete)."""
    p = podman_engine
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM localhost/ovl-test/base:1\nRUN echo victim > /victim.txt\n")
    p.podman("build", "-q", "--network", "none", "-t", "localhost/ovl-test/victim:1", str(ctx))
    top = inspect(p, "localhost/ovl-test/victim:1")["GraphDriver"]["Data"]["UpperDir"]
    lid = os.path.basename(os.path.dirname(top))
    lj = os.path.join(p.root, "overlay-layers", "layers.json")
    saved = open(lj, "rb").read()
    doc = json.loads(saved)
    json.dump([la for la in doc if la["id"] != lid], open(lj, "w"))
    try:
        rep, _ = find_orphans(pinned(p), min_age_seconds=0)
        assert [f.path for f in rep.orphans] == [os.path.dirname(top)], rep.findings
        assert rep.orphans[0].size_bytes and rep.unknown == []
        young, _ = find_orphans(pinned(p), min_age_seconds=3600)
        assert young.orphans == [] and len(young.unknown) == 1
    finally:
        open(lj, "wb").write(saved)
        p.podman("rmi", "-f", "localhost/ovl-test/victim:1", check=False)
    rep, _ = find_orphans(pinned(p), min_age_seconds=0)
    assert rep.findings == []
    assert shutil.which("podman")
