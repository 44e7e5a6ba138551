"""Unit tier for the runtimes: the real captured metadata in ../shared/samples (Docker 20.10, podman 4.3,
containerd 1.6), re-rooted into tmp_path, against the engines' own answers captured with them."""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from ovlinspect.analysis import orphans as A
from ovlinspect.cli import app
from ovlinspect.hostfs import HostRoots
from ovlinspect.mountinfo import parse_mountinfo
from ovlinspect.runtimes import stack_for_named
from ovlinspect.runtimes.bbolt import BoltDB, BoltError, uvarint, varint
from ovlinspect.runtimes.discovery import FoundRoot, RootOverrides, discover_roots
from ovlinspect.runtimes.docker import DockerRuntime, _clean_created_by, chain_ids, read_docker

runner = CliRunner()


def _copy_tree(src: str, dst: str) -> None:
    """Copy a sample tree; the samples store l/ links as files holding the link target."""
    shutil.copytree(src, dst, dirs_exist_ok=True)
    for base, _dirs, _files in os.walk(dst):
        if os.path.basename(base) == "l":
            for n in os.listdir(base):
                p = os.path.join(base, n)
                if os.path.isfile(p) and not os.path.islink(p):
                    target = open(p).read().strip()
                    os.chmod(base, 0o755)
                    os.unlink(p)
                    os.symlink(target, p)
    for base, dirs, _files in os.walk(dst):
        for d in dirs:
            os.chmod(os.path.join(base, d), 0o755)
    # layer dirs as the driver has them (diff/ holds the contents; not captured in the samples)
    for home in ("overlay2", "overlay"):
        h = os.path.join(dst, home)
        if os.path.isdir(h):
            for n in os.listdir(h):
                if n != "l":
                    os.makedirs(os.path.join(h, n, "diff"), exist_ok=True)


def _reroot(text: str, old: str, new: str) -> str:
    return text.replace(old, new)


@pytest.fixture
def docker_root(samples: str, tmp_path) -> str:  # type: ignore[no-untyped-def]
    root = str(tmp_path / "docker")
    _copy_tree(os.path.join(samples, "docker", "tree"), root)
    img = os.path.join(root, "image", "overlay2")
    content = os.path.join(img, "imagedb", "content", "sha256")
    os.makedirs(content, exist_ok=True)
    for f, iid in (("imagedb-content-derived.json", "302c3091be05378ab41a798d09b5fae7d7c70f5010129c8c2fa15a993726de56"), ("imagedb-content-base.json", "a7e5d4a1d916e7aa49fc976f1367f6c17a9028bd56f7973ac157f4fd9ddc0c23")):
        shutil.copy(os.path.join(samples, "docker", f), os.path.join(content, iid))
    shutil.copy(os.path.join(samples, "docker", "repositories.json"), os.path.join(img, "repositories.json"))
    for f in ("config.v2.running.raw.json", "config.v2.created.raw.json"):
        cfg = json.load(open(os.path.join(samples, "docker", f)))
        os.makedirs(os.path.join(root, "containers", cfg["ID"]))
        with open(os.path.join(root, "containers", cfg["ID"], "config.v2.json"), "w") as fh:
            json.dump(cfg, fh)
    return root


def _found(path: str, **kw) -> FoundRoot:  # type: ignore[no-untyped-def]
    return FoundRoot(path, "test", **kw)


# --- Docker ---------------------------------------------------------------------------------------


def test_chain_ids_match_layerdb(samples: str) -> None:
    cfg = json.load(open(os.path.join(samples, "docker", "imagedb-content-derived.json")))
    chains = chain_ids(cfg["rootfs"]["diff_ids"])
    have = set(os.listdir(os.path.join(samples, "docker", "tree", "image", "overlay2", "layerdb", "sha256")))
    assert {c[7:] for c in chains} <= have
    assert chains[0] == cfg["rootfs"]["diff_ids"][0]


def test_created_by_cleaning() -> None:
    assert _clean_created_by("/bin/sh -c rm /data/x") == "RUN rm /data/x"
    assert _clean_created_by("/bin/sh -c #(nop) COPY file:abc in /x ") == "COPY file:abc in /x"
    assert _clean_created_by("|2 A=1 B=2 /bin/sh -c echo $A") == "RUN echo $A"
    assert _clean_created_by("RUN /bin/sh -c apt-get update # buildkit") == "RUN /bin/sh -c apt-get update # buildkit"


def test_docker_owner_and_identities_from_sample(samples: str, docker_root: str) -> None:
    rt = DockerRuntime(_found(docker_root))
    assert rt.state.complete and not rt.problems
    line = _reroot(open(os.path.join(samples, "docker", "host-mountinfo-overlay-line.txt")).read(), "/var/lib/docker", docker_root)
    entries, _ = parse_mountinfo(line.encode())
    from ovlinspect.analysis.mounts import assess_mount
    from ovlinspect.hostfs import HostProbe

    m = assess_mount(entries[0], HostProbe(), {})
    claimed = rt.claim_mount(m)
    assert claimed is not None and claimed.owner is not None
    inspect = json.load(open(os.path.join(samples, "docker", "docker-inspect-running.json")))[0]
    assert claimed.owner.container_id == inspect["Id"] and claimed.owner.container_name == "ovl-running"
    assert claimed.owner.image_ref == "ovl-test/derived:1" and claimed.owner.image_id == inspect["Image"]
    gd = inspect["GraphDriver"]["Data"]
    lowers = [os.path.realpath(la.path) for la in claimed.layers[1:]]
    assert lowers == [_reroot(p, "/var/lib/docker", docker_root) for p in gd["LowerDir"].split(":")]
    ids = [la.identity for la in claimed.layers]
    assert ids[0]["mount-id"] + "-init" == ids[1]["init-id"]
    derived = json.load(open(os.path.join(samples, "docker", "imagedb-content-derived.json")))
    assert [i["diff-id"] for i in ids[2:]] == list(reversed(derived["rootfs"]["diff_ids"]))


def test_docker_named_layers_stay_shared_between_mounts(samples: str, docker_root: str) -> None:
    # the same image's lowers in two mounts of one listing: named once, still one Layer object each
    from ovlinspect.analysis.mounts import AssessMemo, assess_mount
    from ovlinspect.hostfs import HostProbe

    rt = DockerRuntime(_found(docker_root))
    line = _reroot(open(os.path.join(samples, "docker", "host-mountinfo-overlay-line.txt")).read(), "/var/lib/docker", docker_root)
    entry = parse_mountinfo(line.encode())[0][0]
    probe, memo = HostProbe(), AssessMemo()
    m1 = assess_mount(entry, probe, {}, memo=memo)
    m2 = assess_mount(entry, probe, {}, memo=memo)
    c1, c2 = rt.claim_mount(m1), rt.claim_mount(m2)
    assert c1 is not None and c2 is not None
    assert all(a is b for a, b in zip(c1.layers, c2.layers, strict=True))
    assert all(la.identity for la in c1.layers)
    # and naming is what it is without the sharing
    fresh = DockerRuntime(_found(docker_root)).claim_mount(assess_mount(entry, HostProbe(), {}))
    assert fresh is not None and fresh.layers == c1.layers


def test_docker_stopped_container_stack_and_notes(samples: str, docker_root: str) -> None:
    roots = HostRoots(mountinfo_file=os.devnull, runtime_overrides=RootOverrides(docker=(docker_root,)))
    st = stack_for_named(roots, container="ovl-created")
    inspect = json.load(open(os.path.join(samples, "docker", "docker-inspect-created.json")))[0]
    gd = inspect["GraphDriver"]["Data"]
    assert st.layers[0].path == _reroot(gd["UpperDir"], "/var/lib/docker", docker_root)
    assert [la.path for la in st.layers[1:]] == [_reroot(p, "/var/lib/docker", docker_root) for p in gd["LowerDir"].split(":")]
    notes = {i: n["created_by"] for i, n in st.layer_notes.items()}
    assert notes[2].startswith("COPY ") and "RUN rm /data/delete-me.txt" in notes.values()
    assert notes[max(notes)] == "Imported from -"  # the bottom layer: `docker import` has a comment, no created_by
    img = stack_for_named(roots, image="ovl-test/derived:1")
    assert [la.path for la in img.layers] == [la.path for la in st.layers[2:]]
    with pytest.raises(Exception) as ei:
        stack_for_named(roots, image="nope:1")
    assert "not found" in str(ei.value)


def test_docker_orphans_on_sample_copy(docker_root: str) -> None:
    rt = DockerRuntime(_found(docker_root))
    facts = rt.orphan_facts(set(), 0.0, daemon_running=False)
    found = A.classify_all(facts)
    assert [f for f in found if f.verdict == A.ORPHAN] == []
    # leak one layer dir by hand, with an l/ link, and add a stray entry
    leaked = os.path.join(docker_root, "overlay2", "f" * 64)
    os.makedirs(os.path.join(leaked, "diff"))
    with open(os.path.join(leaked, "link"), "w") as fh:
        fh.write("ZZZZZZZZZZZZZZZZZZZZZZZZZZ")
    os.symlink(f"../{'f' * 64}/diff", os.path.join(docker_root, "overlay2", "l", "ZZZZZZZZZZZZZZZZZZZZZZZZZZ"))
    os.symlink("../gone/diff", os.path.join(docker_root, "overlay2", "l", "YYYYYYYYYYYYYYYYYYYYYYYYYY"))
    os.makedirs(os.path.join(docker_root, "overlay2", "not-a-layer\n$(x)"))
    res = runner.invoke(app, ["orphans", "--docker-root", docker_root, "--json"])
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    orph = {(o["kind"], o["path"]) for o in doc["orphans"]}
    assert orph == {("layer-dir", leaked), ("dangling-link", os.path.join(docker_root, "overlay2", "l", "YYYYYYYYYYYYYYYYYYYYYYYYYY"))}
    assert [u["kind"] for u in doc["unknown"]] == ["stray"]
    assert doc["orphan_bytes"] == sum(o["size_bytes"] for o in doc["orphans"]) > 0
    text = runner.invoke(app, ["orphans", "--docker-root", docker_root])
    assert "not-a-layer\\n$(x)" in text.stdout and "\n$(x)" not in text.stdout


def test_docker_records_incomplete_make_unknown(docker_root: str) -> None:
    os.makedirs(os.path.join(docker_root, "overlay2", "e" * 64, "diff"))
    shutil.rmtree(os.path.join(docker_root, "image", "overlay2", "layerdb"))
    found = A.classify_all(DockerRuntime(_found(docker_root)).orphan_facts(set(), 0.0, False))
    assert found and all(f.verdict == A.UNKNOWN for f in found)


def test_read_docker_missing_root_is_empty(tmp_path) -> None:  # type: ignore[no-untyped-def]
    st = read_docker(str(tmp_path / "nope"))
    assert st.layers == {} and st.containers == {}


# --- orphan classification and the script --------------------------------------------------------


def _facts(**kw) -> A.DirFacts:  # type: ignore[no-untyped-def]
    base = {"runtime": "docker", "root": "/r", "path": "/r/overlay2/x", "kind": A.KIND_LAYER, "age_seconds": 10.0, "size_bytes": 4096}
    base.update(kw)
    return A.DirFacts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kw,verdict",
    [
        ({}, A.ORPHAN),
        ({"references": ("layerdb",)}, None),
        ({"mounted": True}, None),
        ({"records_complete": False}, A.UNKNOWN),
        ({"kind": A.KIND_STRAY}, A.UNKNOWN),
        ({"kind": A.KIND_UNUSED_LAYER}, A.UNKNOWN),
        ({"daemon_running": True}, A.UNKNOWN),
        ({"daemon_running": True, "age_seconds": 10_000.0}, A.ORPHAN),
        ({"daemon_running": True, "age_seconds": None}, A.UNKNOWN),
        ({"kind": "something-new"}, A.UNKNOWN),
    ],
)
def test_classify(kw, verdict) -> None:  # type: ignore[no-untyped-def]
    r = A.classify(_facts(**kw), min_age_seconds=600)
    assert (r.verdict if r else None) == verdict


def test_cleanup_script_quotes_hostile_paths_and_skips_unknown(tmp_path) -> None:  # type: ignore[no-untyped-def]
    evil = str(tmp_path / "a b'c\n$(touch PWNED)")
    rep = A.OrphanReport(
        findings=[
            A.classify(_facts(path=evil, also=(str(tmp_path / "l" / "LINK"),))),  # type: ignore[list-item]
            A.classify(_facts(path=str(tmp_path / "unknown"), kind=A.KIND_STRAY)),  # type: ignore[list-item]
        ]
    )
    script = A.cleanup_script(rep)
    toks = shlex.split(script, comments=True)
    targets = [toks[i + 1] for i, t in enumerate(toks) if t == "--"]
    assert targets == [evil, str(tmp_path / "l" / "LINK")]
    assert subprocess.run(["sh", "-n"], input=script.encode()).returncode == 0
    # running it removes exactly the orphan (and creates nothing)
    os.makedirs(evil)
    os.makedirs(tmp_path / "unknown")
    subprocess.run(["sh"], input=script.encode(), cwd=tmp_path, check=True)
    assert not os.path.exists(evil) and os.path.isdir(tmp_path / "unknown") and not os.path.exists(tmp_path / "PWNED")


# --- podman ---------------------------------------------------------------------------------------


@pytest.fixture
def podman_root(samples: str, tmp_path) -> str:  # type: ignore[no-untyped-def]
    root = str(tmp_path / "storage")
    _copy_tree(os.path.join(samples, "podman", "tree", "overlay"), os.path.join(root, "overlay"))
    os.makedirs(os.path.join(root, "overlay-layers"))
    shutil.copy(os.path.join(samples, "podman", "layers.json"), os.path.join(root, "overlay-layers", "layers.json"))
    os.makedirs(os.path.join(root, "overlay-images"))
    shutil.copy(os.path.join(samples, "podman", "images.json"), os.path.join(root, "overlay-images", "images.json"))
    os.makedirs(os.path.join(root, "overlay-containers"))
    shutil.copy(os.path.join(samples, "podman", "containers.json"), os.path.join(root, "overlay-containers", "containers.json"))
    iid = "61b015aecd3b3f72be704e520f8c3623d3766a7dd7e09cddd40c337e65bc9c9e"
    os.makedirs(os.path.join(root, "overlay-images", iid))
    key = "=" + base64.b64encode(f"sha256:{iid}".encode()).decode()
    shutil.copy(os.path.join(samples, "podman", "image-derived-config.json"), os.path.join(root, "overlay-images", iid, key))
    return root


def test_podman_stack_from_sample_matches_inspect(samples: str, podman_root: str) -> None:
    roots = HostRoots(mountinfo_file=os.devnull, runtime_overrides=RootOverrides(podman=(podman_root,)))
    st = stack_for_named(roots, container="pd-created")
    gd = json.load(open(os.path.join(samples, "podman", "podman-inspect-created.json")))[0]["GraphDriver"]["Data"]
    rr = "/var/lib/containers/storage"
    assert st.layers[0].path == _reroot(gd["UpperDir"], rr, podman_root)
    want = [os.path.realpath(_reroot(p, rr, podman_root)) for p in gd["LowerDir"].split(":")]
    assert [os.path.realpath(la.path) for la in st.layers[1:]] == want
    assert "RUN rm /data/delete-me.txt" in {n.get("created_by") for n in st.layer_notes.values()}
    assert st.owner is not None and st.owner.image_ref == "localhost/ovl-test/derived:1"
    from ovlinspect.runtimes.podman import PodmanRuntime

    facts = PodmanRuntime(_found(podman_root)).orphan_facts(set(), 0.0, False)
    assert A.classify_all(facts) == []


# --- containerd and bbolt ---------------------------------------------------------------------------


def test_bbolt_reads_sample_snapshots_like_ctr(samples: str) -> None:
    db = BoltDB.open(os.path.join(samples, "containerd", "overlayfs-metadata.db"))
    snaps = {}
    for name in db.buckets(b"v1", b"snapshots"):
        vals = db.values(b"v1", b"snapshots", name)
        key = name.decode().split("/", 2)[2]
        parent = vals.get(b"parent", b"").decode().split("/", 2)[-1] if b"parent" in vals else ""
        snaps[key] = ({1: "View", 2: "Active", 3: "Committed"}[vals[b"kind"][0]], parent, uvarint(vals[b"id"]))
    ctr = {}
    for line in open(os.path.join(samples, "containerd", "ctr-snapshots-ls.txt")).read().splitlines()[1:]:
        parts = line.split()
        ctr[parts[0]] = (parts[-1], parts[1] if len(parts) == 3 else "")
    assert {k: v[:2] for k, v in snaps.items()} == ctr
    assert sorted(v[2] for v in snaps.values()) == list(range(1, 9))


def test_bbolt_rejects_garbage(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BoltError):
        BoltDB(b"\0" * 8192)
    assert varint(bytes([3])) == -2 and uvarint(bytes([0x80, 0x01])) == 128


def test_containerd_owner_from_task_mount_point(samples: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ovlinspect.analysis.mounts import assess_mount
    from ovlinspect.hostfs import HostProbe
    from ovlinspect.runtimes.containerd import ContainerdRuntime

    root = str(tmp_path / "containerd")
    snap = os.path.join(root, "io.containerd.snapshotter.v1.overlayfs")
    for i in range(1, 9):
        os.makedirs(os.path.join(snap, "snapshots", str(i), "fs"))
    shutil.copy(os.path.join(samples, "containerd", "overlayfs-metadata.db"), os.path.join(snap, "metadata.db"))
    line = _reroot(open(os.path.join(samples, "containerd", "host-mountinfo-ctd-line.txt")).read(), "/var/lib/containerd", root)
    m = assess_mount(parse_mountinfo(line.encode())[0][0], HostProbe(), {})
    rt = ContainerdRuntime(_found(root))
    c = rt.claim_mount(m)
    assert c is not None and c.owner is not None and c.owner.container_id == "ctd-running"
    assert c.owner.details["namespace"] == "ovltest"
    assert [la.identity["snapshot-id"] for la in c.layers] == ["8", "6", "5", "4", "3", "2", "1"]
    assert c.layers[0].identity["kind"] == "active" and c.layers[1].identity["snapshot-key"].startswith("sha256:61aa")
    facts = rt.orphan_facts(set(), 0.0, False)
    assert A.classify_all(facts) == []
    os.makedirs(os.path.join(snap, "snapshots", "42", "fs"))
    assert [f.path for f in A.classify_all(rt.orphan_facts(set(), 0.0, False))] == [os.path.join(snap, "snapshots", "42")]


# --- discovery --------------------------------------------------------------------------------------


def test_discovery_from_config_files(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    etc = tmp_path / "etc"
    (etc / "docker").mkdir(parents=True)
    (etc / "containerd").mkdir()
    droot = tmp_path / "dockerdata"
    (droot / "overlay2").mkdir(parents=True)
    croot = tmp_path / "ctd"
    croot.mkdir()
    proot = tmp_path / "graph"
    (proot / "overlay").mkdir(parents=True)
    (etc / "docker" / "daemon.json").write_text(json.dumps({"data-root": str(droot)}))
    (etc / "containerd" / "config.toml").write_text(f'version = 2\nroot = "{croot}"\n')
    conf = tmp_path / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{proot}"\nrunroot = "{tmp_path}/run"\n')
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(conf))
    rr = discover_roots(etc_root=str(etc), scan_processes=False)
    assert [r.path for r in rr.docker][:1] == [str(droot)] and "daemon.json" in rr.docker[0].source
    assert rr.containerd[0].path == str(croot) and "config.toml" in rr.containerd[0].source
    assert rr.podman[0].path == str(proot) and rr.podman[0].run_root == f"{tmp_path}/run"
    # overrides win, and roots that do not exist are dropped
    rr = discover_roots(RootOverrides(docker=(str(tmp_path / "missing"),)), etc_root=str(etc), scan_processes=False)
    assert rr.docker == []
    (etc / "docker" / "daemon.json").write_text("{not json")
    rr = discover_roots(etc_root=str(etc), scan_processes=False)
    assert any(p.kind == "config" for p in rr.problems)


def test_env_overrides_pin_roots(docker_root: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ovlinspect.runtimes import overrides_from_env, runtime_roots

    assert overrides_from_env({}) is None
    monkeypatch.setenv("OVLINSPECT_DOCKER_ROOT", docker_root)
    rr = runtime_roots(HostRoots(mountinfo_file=os.devnull))
    assert [r.path for r in rr.docker] == [docker_root] and rr.docker[0].source == "--docker-root"
    st = stack_for_named(HostRoots(mountinfo_file=os.devnull), container="ovl-running")
    assert st.owner is not None and st.owner.container_name == "ovl-running"


def test_docker_unfinished_write_set_protects_new_dirs(docker_root: str) -> None:
    """A pull in progress: the driver dir exists before the layerdb write set names it."""
    leaked = os.path.join(docker_root, "overlay2", "d" * 64)
    os.makedirs(os.path.join(leaked, "diff"))
    os.makedirs(os.path.join(docker_root, "image", "overlay2", "layerdb", "tmp", "write-set-123"))
    rt = DockerRuntime(_found(docker_root))
    assert A.classify_all(rt.orphan_facts(set(), 0.0 + 1e12, daemon_running=True), 0) == []
    found = A.classify_all(rt.orphan_facts(set(), 0.0 + 1e12, daemon_running=False), 0)
    assert [(f.path, f.verdict) for f in found] == [(leaked, A.ORPHAN)]
