"""Runtime tier, Docker: a real dockerd with an isolated root; ovlinspect's answers against the engine's own.

The engine (tests/engines.py) runs inside this session's private mount namespace; so do the CLI
calls (CliRunner, in-process), so both see the same mounts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
from engines import SID, _layer_tar, busybox_layer, docker_engine, image_archive  # noqa: F401
from typer.testing import CliRunner

from ovlinspect.cli import app
from ovlinspect.hostfs import HostRoots
from ovlinspect.runtimes import find_orphans, stack_for_named
from ovlinspect.runtimes.discovery import RootOverrides

pytestmark = [pytest.mark.runtime]
runner = CliRunner()


def pinned(d) -> HostRoots:  # type: ignore[no-untyped-def]
    return HostRoots(runtime_overrides=RootOverrides(docker=(d.root,)))


def inspect(d, what: str) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(d.docker("inspect", what))[0]


def ls_mounts() -> list[dict]:
    res = runner.invoke(app, ["ls", "--json"])
    assert res.exit_code in (0, 3), res.output
    return json.loads(res.stdout)["mounts"]


def mount_of(mounts: list[dict], name: str) -> dict:
    hits = [m for m in mounts if (m.get("owner") or {}).get("container_name") == name]
    assert len(hits) == 1, [m.get("owner") for m in mounts]
    return hits[0]


def test_discovery_finds_the_running_dockerd(docker_engine) -> None:  # noqa: F811
    from ovlinspect.runtimes.discovery import discover_roots

    rr = discover_roots()
    found = [r for r in rr.docker if os.path.realpath(r.path) == os.path.realpath(docker_engine.root)]
    assert found and found[0].daemon_pid == docker_engine.proc.pid, rr.docker
    assert "--data-root" in found[0].source


def test_ls_owner_and_layers_match_docker_inspect(docker_engine) -> None:  # noqa: F811
    d = docker_engine
    name = d.names["running"]
    info = inspect(d, name)
    gd = info["GraphDriver"]["Data"]
    m = mount_of(ls_mounts(), name)
    o = m["owner"]
    assert o["runtime"] == "docker" and o["container_id"] == info["Id"] and o["image_id"] == info["Image"]
    assert o["image_ref"] == "ovl-test/derived:1"
    assert m["mountpoint"] == gd["MergedDir"]
    assert m["upperdir"] == gd["UpperDir"]
    lowers = [os.path.realpath(p) for p in m["lowerdirs"]]
    assert lowers == gd["LowerDir"].split(":")
    # identities: upper = mount-id, first lower = the -init layer, the rest = image layers with chain/diff ids
    layers = m["layers"]
    mount_id = os.path.basename(os.path.dirname(gd["UpperDir"]))
    assert layers[0]["identity"]["mount-id"] == mount_id
    assert layers[1]["identity"]["init-id"] == mount_id + "-init"
    img = json.loads(d.docker("image", "inspect", "ovl-test/derived:1"))[0]
    diff_ids = img["RootFS"]["Layers"]
    got = [la["identity"].get("diff-id") for la in layers[2:]]
    assert got == list(reversed(diff_ids))
    for la in layers[2:]:
        assert os.path.isdir(os.path.join(d.root, "image/overlay2/layerdb", la["identity"]["chain-id"].replace(":", "/")))


def test_stopped_container_stack_matches_docker_inspect(docker_engine) -> None:  # noqa: F811
    d = docker_engine
    name = d.names["created"]
    gd = inspect(d, name)["GraphDriver"]["Data"]
    st = stack_for_named(pinned(d), container=name)
    assert st.owner is not None and st.owner.container_name == name
    assert st.layers[0].role.value == "upper" and st.layers[0].path == gd["UpperDir"]
    assert [la.path for la in st.layers[1:]] == gd["LowerDir"].split(":")
    # and by id prefix, and for the running one (whose live mount is used)
    st2 = stack_for_named(pinned(d), container=inspect(d, name)["Id"][:12])
    assert [la.path for la in st2.layers] == [la.path for la in st.layers]
    run = stack_for_named(pinned(d), container=d.names["running"])
    assert run.mount is not None and run.owner.container_name == d.names["running"]


def test_image_stack_and_history_notes(docker_engine) -> None:  # noqa: F811
    d = docker_engine
    img = json.loads(d.docker("image", "inspect", "ovl-test/derived:1"))[0]
    st = stack_for_named(pinned(d), image="ovl-test/derived:1")
    gd = img["GraphDriver"]["Data"]
    assert [la.path for la in st.layers] == [gd["UpperDir"]] + gd["LowerDir"].split(":")
    notes = {i: n.get("created_by") for i, n in st.layer_notes.items()}
    # top first: COPY, mkdir, mv, rm -rf /opq, rm /data/delete-me.txt, the import
    assert notes[0].startswith("COPY ")
    assert notes[3] == "RUN rm /data/delete-me.txt" or notes[4] == "RUN rm /data/delete-me.txt"
    # the layer that holds the whiteout for /data/delete-me.txt is the one named by its RUN step
    for i, la in enumerate(st.layers):
        wh = os.path.join(la.path, "data", "delete-me.txt")
        if os.path.lexists(wh):
            stt = os.lstat(wh)
            if stt.st_rdev == 0 and (stt.st_mode & 0o170000) == 0o020000:
                assert notes[i] == "RUN rm /data/delete-me.txt"
                break
    else:
        pytest.fail("no whiteout for /data/delete-me.txt in any layer")


def test_history_notes_of_a_container(docker_engine) -> None:  # noqa: F811
    st = stack_for_named(pinned(docker_engine), container=docker_engine.names["created"])
    texts = [n.get("created_by") for n in st.layer_notes.values()]
    assert "RUN mv /ren /renamed" in texts and 0 not in st.layer_notes and 1 not in st.layer_notes


def test_unknown_container_is_a_clean_error(docker_engine) -> None:  # noqa: F811
    from ovlinspect.errors import NotFoundError

    with pytest.raises(NotFoundError):
        stack_for_named(pinned(docker_engine), container="no-such-container-xyz")


def test_deep_image_relative_mountinfo_paths_resolved(docker_engine, tmp_path) -> None:  # noqa: F811
    """110 layers: overlay2 switches to `l/XXXX` relative lowerdirs (mount data > one page)."""
    d = docker_engine
    n = 110
    layers = [busybox_layer()] + [_layer_tar([("deep", "dir", b""), (f"deep/f{i:03d}", "file", f"{i}\n".encode())]) for i in range(1, n)]
    arch = image_archive(str(tmp_path / "deep.tar"), "ovl-test/deep:1", layers, ["base"] + [f"RUN echo {i}" for i in range(1, n)])
    d.docker("load", "-i", arch)
    name = f"ovl-deep-{SID}"
    d.docker("run", "-d", "--name", name, "ovl-test/deep:1")
    try:
        gd = inspect(d, name)["GraphDriver"]["Data"]
        m = mount_of(ls_mounts(), name)
        written = [la["written"] for la in m["layers"] if la["role"] == "lower"]
        assert len(written) == n + 1
        assert all(not w.startswith("/") and w.startswith("l/") for w in written), written[:3]
        assert all(la["resolved"] and la["exists"] for la in m["layers"])
        assert [os.path.realpath(p) for p in m["lowerdirs"]] == gd["LowerDir"].split(":")
        assert os.path.realpath(m["upperdir"]) == gd["UpperDir"]
        assert all("cache-id" in la["identity"] for la in m["layers"])
        st = stack_for_named(pinned(d), container=name)
        assert st.layer_notes[2]["created_by"] == f"RUN echo {n - 1}"
    finally:
        d.docker("rm", "-f", name, check=False)


LETTER = {"added": "A", "changed": "C", "deleted": "D"}


def ovl_diff(*args: str) -> set[tuple[str, str]]:
    res = runner.invoke(app, ["diff", "--json", *args])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["problems"] == [] and doc["errors"] == []
    return {(LETTER[c["change"]], c["path"]) for c in doc["changes"]}


def engine_diff(out: str) -> set[tuple[str, str]]:
    return {(ln[0], ln[2:]) for ln in out.splitlines() if ln.strip()}


@pytest.mark.parametrize("which", ["running", "created"])
def test_diff_matches_docker_diff(docker_engine, which: str) -> None:  # noqa: F811
    d = docker_engine
    name = d.names[which]
    want = engine_diff(d.docker("diff", name))
    assert ovl_diff("--container", name) == want
    if which == "running":
        assert ("D", "/renamed") in want and ("A", "/added/new.txt") in want


def test_why_missing_names_the_run_step(docker_engine) -> None:  # noqa: F811
    for which in ("created", "running"):
        name = docker_engine.names[which]
        res = runner.invoke(app, ["why-missing", "--container", name, "--json", "/data/delete-me.txt"])
        assert res.exit_code == 1, res.output
        r = json.loads(res.stdout)["results"][0]
        assert r["visible"] is False and r["verdict"] == "whiteout"
        assert r["layer"]["note"]["created_by"] == "RUN rm /data/delete-me.txt"
        text = runner.invoke(app, ["why-missing", "--container", name, "/data/delete-me.txt"])
        assert "RUN rm /data/delete-me.txt" in text.stdout
    # deleted in the running container itself: the upper dir, no image step
    res = runner.invoke(app, ["why-missing", "--container", docker_engine.names["running"], "--json", "/added/one.txt"])
    r = json.loads(res.stdout)["results"][0]
    assert r["visible"] is False and r["layer"]["role"] == "upper" and "note" not in r["layer"]


_UNITS = {"B": 1, "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3}  # docker's go-units HumanSize (decimal)


def docker_size(s: str) -> tuple[float, float]:
    """`14B`, `1.982MB` -> (bytes, rounding tolerance): go-units prints 4 significant digits."""
    import re

    m = re.fullmatch(r"([\d.]+)\s*([kKMG]?B)", s.strip())
    assert m, s
    v, unit = float(m.group(1)), _UNITS[m.group(2)]
    return v * unit, (0.5 if unit == 1 else 0.0005 * v * unit + 1)


def dir_bytes(top: str) -> int:
    """Apparent bytes of the directories themselves (moby's directory.Size skips dirs)."""
    total = 0
    for dp, _dn, _fn in os.walk(top):
        total += os.lstat(dp).st_size
    return total


def du_layers(*args: str) -> list[dict]:
    res = runner.invoke(app, ["du", "--per-layer", "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["layers"]


def test_du_of_container_upper_matches_docker_ps_size(docker_engine) -> None:  # noqa: F811
    """docker ps -s SIZE = bytes of the non-directory entries of the upper dir (moby pkg/directory Size)."""
    d = docker_engine
    sizes = dict(line.split(" ", 1) for line in d.docker("ps", "-as", "--format", "{{.Names}} {{.Size}}").splitlines())
    for key in ("running", "created"):
        name = d.names[key]
        want, tol = docker_size(sizes[name].split(" (")[0])
        up = [la for la in du_layers("--container", name) if la["role"] == "upper"]
        assert len(up) == 1
        got = up[0]["apparent_bytes"] - dir_bytes(up[0]["path"])
        assert abs(got - want) <= tol, (name, got, sizes[name])


def test_per_image_unique_size_matches_docker_system_df(docker_engine, monkeypatch) -> None:  # noqa: F811
    """docker system df -v UNIQUE SIZE = bytes of the image's layers no other image uses."""
    d = docker_engine
    monkeypatch.setenv("OVLINSPECT_DOCKER_ROOT", d.root)  # other engines of this session hold look-alike images
    rows = {}
    for line in d.docker("system", "df", "-v").splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[0] in ("ovl-test/derived", "ovl-test/base"):
            rows[parts[0]] = parts
    stacks = {img: stack_for_named(pinned(d), image=f"{img}:1") for img in rows}
    others = {}
    for img in rows:
        other_imgs = [r for r in json.loads(d.docker("image", "inspect", *d.docker("images", "-q").split())) if not (r.get("RepoTags") or []) or f"{img}:1" not in r["RepoTags"]]
        others[img] = {p for r in other_imgs for p in [r["GraphDriver"]["Data"]["UpperDir"], *(r["GraphDriver"]["Data"].get("LowerDir") or "").split(":")] if p}
    for img, parts in rows.items():
        # columns: REPO TAG ID CREATED(3 words) SIZE SHARED UNIQUE CONTAINERS
        unique_s = parts[-2]
        want, tol = docker_size(unique_s)
        layers = du_layers("--image", f"{img}:1")
        unique_paths = {la.path for la in stacks[img].layers} - others[img]
        got = 0
        for la in layers:
            real = os.path.realpath(la["path"])
            if real in unique_paths:
                got += la["apparent_bytes"] - dir_bytes(real)
        assert abs(got - want) <= tol, (img, got, unique_s, sorted(unique_paths))


def _orphans(d, min_age: float = 0.0):  # type: ignore[no-untyped-def]
    rep, _probs = find_orphans(pinned(d), min_age_seconds=min_age)
    return rep


def test_orphans_clean_host_has_none(docker_engine) -> None:  # noqa: F811
    rep = _orphans(docker_engine)
    assert rep.findings == [], rep.findings
    res = runner.invoke(app, ["orphans", "--docker-root", docker_engine.root, "--min-age", "0", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["orphans"] == [] and doc["orphan_bytes"] == 0


def test_orphans_after_deleting_a_layerdb_entry(docker_engine, tmp_path) -> None:  # noqa: F811
    d = docker_engine
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM ovl-test/base:1\nRUN echo victim > /victim.txt\n")
    d.docker("build", "-q", "-t", "ovl-test/victim-ldb:1", str(ctx))
    img = json.loads(d.docker("image", "inspect", "ovl-test/victim-ldb:1"))[0]
    top_dir = os.path.dirname(img["GraphDriver"]["Data"]["UpperDir"])
    from ovlinspect.runtimes.docker import chain_ids

    chain = chain_ids(img["RootFS"]["Layers"])[-1]
    entry = os.path.join(d.root, "image/overlay2/layerdb", chain.replace(":", "/"))
    assert open(os.path.join(entry, "cache-id")).read() == os.path.basename(top_dir)
    shutil.rmtree(entry)  # the hand-made damage
    rep = _orphans(d)
    assert [f.path for f in rep.orphans] == [top_dir], rep.findings
    f = rep.orphans[0]
    assert f.kind == "layer-dir" and f.size_bytes and f.size_bytes > 0
    link = open(os.path.join(top_dir, "link")).read().strip()
    assert f.also == (os.path.join(d.root, "overlay2", "l", link),)
    assert rep.unknown == [] and rep.orphan_bytes == f.size_bytes
    # while the daemon runs, a young dir is never called an orphan by default
    young = _orphans(d, min_age=3600)
    assert young.orphans == [] and [u.path for u in young.unknown] == [top_dir]
    # the script removes exactly that dir and its link, and nothing is deleted by ovlinspect itself
    res = runner.invoke(app, ["orphans", "--docker-root", d.root, "--min-age", "0", "--script"])
    assert res.exit_code == 1, res.output
    rm_lines = [ln for ln in res.stdout.splitlines() if ln.startswith("rm ")]
    assert len(rm_lines) == 2 and top_dir in rm_lines[0] and link in rm_lines[1]
    assert os.path.isdir(top_dir)
    d.docker("rmi", "-f", "ovl-test/victim-ldb:1", check=False)
    shutil.rmtree(top_dir, ignore_errors=True)  # repair for the next tests
    if os.path.lexists(f.also[0]):
        os.unlink(f.also[0])
    assert _orphans(d).findings == []


def test_orphans_after_killing_dockerd_mid_rmi(docker_engine, tmp_path) -> None:  # noqa: F811
    d = docker_engine
    sha = os.path.join(d.root, "image/overlay2/layerdb/sha256")
    removing: list[str] = []
    # a big unique layer, so that removing it takes long enough to interrupt; bigger if we were too slow
    for attempt, nfiles in enumerate((20000, 80000)):
        ctx = tmp_path / f"ctx{attempt}"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(f"FROM ovl-test/base:1\nRUN mkdir /big && cd /big && seq 1 {nfiles} | xargs touch\n")
        d.docker("build", "-q", "-t", "ovl-test/victim-rmi:1", str(ctx))
        assert _orphans(d).findings == []
        rmi = subprocess.Popen(["docker", "rmi", "ovl-test/victim-rmi:1"], env={**os.environ, **d.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not removing and rmi.poll() is None:
            removing = [n for n in os.listdir(sha) if n.endswith("-removing")]
        if removing:
            break
        rmi.wait(30)  # the delete finished before we saw it: try again with a bigger layer
    d.kill9()
    rmi.kill()  # the client would wait for the dead daemon
    rmi.wait(30)
    try:
        assert removing, "never saw the layerdb entry renamed to -removing"
        expected: dict[str, set[str]] = {}
        for n in os.listdir(sha):
            if not n.endswith("-removing"):
                continue
            meta = os.path.join(sha, n)
            cache = open(os.path.join(meta, "cache-id")).read().strip()
            ldir = os.path.join(d.root, "overlay2", cache)
            if os.path.lexists(ldir):
                expected[ldir] = {meta}
            else:
                expected[meta] = set()
        assert expected
        rep = _orphans(d)
        got = {f.path: set(f.also) - {p for p in f.also if "/overlay2/l/" in p} for f in rep.orphans}
        assert got == expected, rep.findings
        assert rep.unknown == []
        # nothing that any container, image or -init layer uses was reported
        for name in d.names.values():
            gd = inspect_after_restart_guard(d, name)
            for p in [gd] if gd else []:
                assert not any(f.path.startswith(p) for f in rep.findings)
        # the reviewed clean-up script (daemon stopped, as it says) removes exactly the leak
        res = runner.invoke(app, ["orphans", "--docker-root", d.root, "--min-age", "0", "--script"])
        assert res.exit_code == 1
        subprocess.run(["sh", "-c", res.stdout], check=True)
        assert _orphans(d).findings == []
        for p in expected:
            assert not os.path.lexists(p)
    finally:
        d.restart_after_kill()  # the rest of the session (and teardown) expects a daemon


def inspect_after_restart_guard(d, name: str) -> str | None:  # type: ignore[no-untyped-def]
    """The container's layer dir from its layerdb mount record (the daemon is down)."""
    mroot = os.path.join(d.root, "image/overlay2/layerdb/mounts")
    for cid in os.listdir(mroot):
        cfg = os.path.join(d.root, "containers", cid, "config.v2.json")
        if os.path.exists(cfg) and json.load(open(cfg)).get("Name", "").lstrip("/") == name:
            return os.path.join(d.root, "overlay2", open(os.path.join(mroot, cid, "mount-id")).read().strip())
    return None
