"""Bad input, fuzzed with hypothesis: the runtimes' on-disk records and the btrfs capture replay.

Starting from the real captured samples (../shared/samples), one record at a time is corrupted:
a JSON subtree replaced by any JSON value (Docker config.v2.json, imagedb, repositories.json,
containers/storage layers.json / images.json / containers.json / mountpoints.json, btrfs capture
files), a small file replaced by junk (layerdb cache-id/parent/size, overlay2 `lower`), bytes of
containerd's bbolt metadata.db flipped or cut. Then every entry point the commands use is run
(load_all, claim_mount, find + stack, layer_dirs, orphan_facts; read_replay + assess + render).
Only the declared errors may come out: an OvlinspectError or Problems — never another exception.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ovlinspect.cli import app
from ovlinspect.errors import OvlinspectError
from ovlinspect.hostfs import HostProbe, HostRoots
from ovlinspect.mountinfo import parse_mountinfo
from ovlinspect.runtimes.bbolt import BoltDB, BoltError
from ovlinspect.runtimes.discovery import FoundRoot, RuntimeRoots
from ovlinspect.runtimes.registry import load_all

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
SAMPLES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "samples"))
SAMPLES = SAMPLES if os.path.isdir(SAMPLES) else os.environ.get("OVLINSPECT_SAMPLES", SAMPLES)
pytestmark = pytest.mark.skipif(not os.path.isdir(SAMPLES), reason=f"shared samples not found at {SAMPLES}")

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=8),
    st.sampled_from(["sha256:", "sha256:ab", "/", "..", "l/X", "../a/diff", "a:b", "\n", "a\0b", "0", "-1", "0x10"]),
)
json_values = st.recursive(
    json_leaf, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=6), c, max_size=4)), max_leaves=12
)
DEEP_JSON = [b"[" * 100_000, b'{"a":' * 50_000]  # json recurses per level: was RecursionError


def _mutate(doc: Any, path: list[int], val: Any) -> Any:
    """`doc` with the node at `path` (indices taken modulo each level's size) replaced by `val`."""
    if not path:
        return val
    if isinstance(doc, dict) and doc:
        k = sorted(doc)[path[0] % len(doc)]
        return {**doc, k: _mutate(doc[k], path[1:], val)}
    if isinstance(doc, list) and doc:
        i = path[0] % len(doc)
        return doc[:i] + [_mutate(doc[i], path[1:], val)] + doc[i + 1 :]
    return val


@st.composite
def json_corruption(draw: st.DrawFn) -> Callable[[bytes], bytes]:
    mode = draw(st.sampled_from(["subtree", "subtree", "subtree", "junk", "deep"]))
    if mode == "junk":
        junk = draw(st.binary(max_size=40))
        return lambda _orig: junk
    if mode == "deep":
        deep = draw(st.sampled_from(DEEP_JSON))
        return lambda _orig: deep
    path = draw(st.lists(st.integers(0, 60), max_size=6))
    val = draw(json_values)
    return lambda orig: json.dumps(_mutate(json.loads(orig), path, val)).encode()


@contextmanager
def _rewritten(path: str, new: bytes) -> Iterator[None]:
    orig = open(path, "rb").read()
    try:
        with open(path, "wb") as fh:
            fh.write(new)
        yield
    finally:
        with open(path, "wb") as fh:
            fh.write(orig)


def _copy_tree(src: str, dst: str) -> None:
    """Copy a sample tree; the samples store l/ links as files holding the link target."""
    shutil.copytree(src, dst, dirs_exist_ok=True)
    for base, dirs, _files in os.walk(dst):
        for d in dirs:
            os.chmod(os.path.join(base, d), 0o755)
        if os.path.basename(base) == "l":
            for n in os.listdir(base):
                p = os.path.join(base, n)
                if os.path.isfile(p) and not os.path.islink(p):
                    target = open(p).read().strip()
                    os.unlink(p)
                    os.symlink(target, p)
    for home in ("overlay2", "overlay"):
        h = os.path.join(dst, home)
        if os.path.isdir(h):
            for n in os.listdir(h):
                if n != "l":
                    os.makedirs(os.path.join(h, n, "diff"), exist_ok=True)


NAMES = ["pd-running", "pd-created", "ctd-running", "ovl-test/derived:1", "ovl-test/base:1", "localhost/ovl-test/derived:1", "302c", "a7e5", "61b0"]


def _exercise(rr: RuntimeRoots, mountinfo_line: str, containers: list[str]) -> None:
    """Every runtime entry point the commands call; only OvlinspectError may escape a stack()."""
    roots = HostRoots(mountinfo_file=os.devnull)
    loaded = load_all(rr)
    for p in loaded.problems:
        assert p.message and "\n" not in p.message
    entries, _ = parse_mountinfo(mountinfo_line.encode())
    from ovlinspect.analysis.mounts import assess_or_problem

    for rt in loaded.runtimes:
        for e in entries:
            m, _prob = assess_or_problem(e, HostProbe(), {})
            if m is not None:
                rt.claim_mount(m)
        for path, label in rt.layer_dirs():
            assert isinstance(path, str) and isinstance(label, str)
        rt.orphan_facts(set(), 0.0, False)
        for kw in [{"container": c} for c in containers + NAMES] + [{"image": i} for i in NAMES]:
            try:
                hit = rt.find(**kw)
                if hit is not None:
                    st = rt.stack(hit, roots)
                    assert all(isinstance(la.path, str) for la in st.layers)
            except OvlinspectError as exc:
                assert exc.message and "\n" not in exc.message


# --- Docker ---------------------------------------------------------------------------------------

IMAGES = {"imagedb-content-derived.json": "302c3091be05378ab41a798d09b5fae7d7c70f5010129c8c2fa15a993726de56",
          "imagedb-content-base.json": "a7e5d4a1d916e7aa49fc976f1367f6c17a9028bd56f7973ac157f4fd9ddc0c23"}


@pytest.fixture(scope="module")
def docker_root(tmp_path_factory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    root = str(tmp_path_factory.mktemp("fuzz-docker") / "docker")
    _copy_tree(os.path.join(SAMPLES, "docker", "tree"), root)
    img = os.path.join(root, "image", "overlay2")
    content = os.path.join(img, "imagedb", "content", "sha256")
    os.makedirs(content, exist_ok=True)
    for f, iid in IMAGES.items():
        shutil.copy(os.path.join(SAMPLES, "docker", f), os.path.join(content, iid))
    shutil.copy(os.path.join(SAMPLES, "docker", "repositories.json"), os.path.join(img, "repositories.json"))
    cids = []
    for f in ("config.v2.running.raw.json", "config.v2.created.raw.json"):
        cfg = json.load(open(os.path.join(SAMPLES, "docker", f)))
        cids.append(cfg["ID"])
        os.makedirs(os.path.join(root, "containers", cfg["ID"]))
        with open(os.path.join(root, "containers", cfg["ID"], "config.v2.json"), "w") as fh:
            json.dump(cfg, fh)
    json_files = [os.path.join(img, "repositories.json")] + [os.path.join(content, i) for i in IMAGES.values()]
    json_files += [os.path.join(root, "containers", c, "config.v2.json") for c in cids]
    small = []
    for base, _dirs, files in os.walk(os.path.join(img, "layerdb")):
        small += [os.path.join(base, f) for f in files if f != "tar-split.json"]
    for base, _dirs, files in os.walk(os.path.join(root, "overlay2")):
        small += [os.path.join(base, f) for f in files if f in ("lower", "link")]
    line = open(os.path.join(SAMPLES, "docker", "host-mountinfo-overlay-line.txt")).read().replace("/var/lib/docker", root)
    rr = RuntimeRoots(docker=[FoundRoot(root, "test")])
    _exercise(rr, line, cids)  # the pristine copy works
    return {"rr": rr, "json": sorted(json_files), "small": sorted(small), "line": line, "cids": cids, "img": img}


@FUZZ
@given(st.integers(0, 1000), json_corruption())
def test_docker_json_records(docker_root: dict[str, Any], which: int, corrupt: Callable[[bytes], bytes]) -> None:
    path = docker_root["json"][which % len(docker_root["json"])]
    with _rewritten(path, corrupt(open(path, "rb").read())):
        _exercise(docker_root["rr"], docker_root["line"], docker_root["cids"])


@FUZZ
@given(st.integers(0, 1000), st.one_of(st.binary(max_size=60), st.sampled_from(
    [b"", b":", b"l/", b"l/../../x", b"::", b"a/diff", b"/diff", b"l/ZZ:l/YY", b"9" * 40, b"-1", b"sha256:", b"\xff\xfe", b"x\0y/diff"])))
@example(0, b"a\0b/diff")  # a `<id>/diff` entry holding a NUL byte: open() raised ValueError
def test_docker_small_records_and_lower_files(docker_root: dict[str, Any], which: int, junk: bytes) -> None:
    small = docker_root["small"]
    lowers = [p for p in small if p.endswith("/lower")]
    path = (lowers if junk == b"a\0b/diff" else small)[which % len(lowers if junk == b"a\0b/diff" else small)]
    with _rewritten(path, junk):
        _exercise(docker_root["rr"], docker_root["line"], docker_root["cids"])


def test_docker_regressions(docker_root: dict[str, Any]) -> None:
    """Each was a TypeError/AttributeError out of read_docker (and so out of `orphans`, `du --all`)."""
    img = docker_root["img"]
    content = os.path.join(img, "imagedb", "content", "sha256")
    repos = os.path.join(img, "repositories.json")
    cfg_path = os.path.join(content, IMAGES["imagedb-content-base.json"])
    cfg = json.load(open(cfg_path))
    for path, doc in ((repos, {"Repositories": []}), (repos, {"Repositories": {"r": {"r:1": ["x"]}}}),
                      (cfg_path, {**cfg, "rootfs": {"diff_ids": True}})):
        with _rewritten(path, json.dumps(doc).encode()):
            _exercise(docker_root["rr"], docker_root["line"], docker_root["cids"])


# --- podman (containers/storage) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def podman_root(tmp_path_factory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("fuzz-podman")
    root = str(base / "storage")
    _copy_tree(os.path.join(SAMPLES, "podman", "tree", "overlay"), os.path.join(root, "overlay"))
    files = []
    for d, f in (("overlay-layers", "layers.json"), ("overlay-images", "images.json"), ("overlay-containers", "containers.json")):
        os.makedirs(os.path.join(root, d), exist_ok=True)
        shutil.copy(os.path.join(SAMPLES, "podman", f), os.path.join(root, d, f))
        files.append(os.path.join(root, d, f))
    iid = "61b015aecd3b3f72be704e520f8c3623d3766a7dd7e09cddd40c337e65bc9c9e"
    os.makedirs(os.path.join(root, "overlay-images", iid))
    key = "=" + base64.b64encode(f"sha256:{iid}".encode()).decode()
    shutil.copy(os.path.join(SAMPLES, "podman", "image-derived-config.json"), os.path.join(root, "overlay-images", iid, key))
    files.append(os.path.join(root, "overlay-images", iid, key))
    run = str(base / "run")
    os.makedirs(os.path.join(run, "overlay-layers"))
    mp = os.path.join(run, "overlay-layers", "mountpoints.json")
    with open(mp, "w") as fh:
        json.dump([{"id": "1637bbcb8fb5d3a5687daefc247fd52838fb66b43462dc6b45b3ac476fa9090c", "path": "/x", "count": 1}], fh)
    files.append(mp)
    line = open(os.path.join(SAMPLES, "podman", "host-mountinfo-pd-lines.txt")).read().replace("/var/lib/containers/storage", root)
    rr = RuntimeRoots(podman=[FoundRoot(root, "test", run_root=run)])
    _exercise(rr, line, [])
    return {"rr": rr, "files": files, "line": line}


@FUZZ
@given(st.integers(0, 1000), json_corruption())
def test_podman_records(podman_root: dict[str, Any], which: int, corrupt: Callable[[bytes], bytes]) -> None:
    path = podman_root["files"][which % len(podman_root["files"])]
    with _rewritten(path, corrupt(open(path, "rb").read())):
        _exercise(podman_root["rr"], podman_root["line"], [])


def test_podman_regressions(podman_root: dict[str, Any]) -> None:
    """Fields of the wrong type were used as dict keys / paths / JSON text (TypeError)."""
    cpath = podman_root["files"][2]
    docs = json.load(open(cpath))
    for field, bad in (("layer", {"a": 1}), ("image", ["x"]), ("metadata", 1.5), ("image", True), ("names", "pd-running")):
        changed = [{**docs[0], field: bad}] + docs[1:]
        with _rewritten(cpath, json.dumps(changed).encode()):
            _exercise(podman_root["rr"], podman_root["line"], [])
    lpath = podman_root["files"][0]
    layers = json.load(open(lpath))
    with _rewritten(lpath, json.dumps([{**la, "parent": ["x"]} for la in layers]).encode()):
        _exercise(podman_root["rr"], podman_root["line"], [])


# --- containerd (bbolt) ---------------------------------------------------------------------------

DB_SAMPLE = os.path.join(SAMPLES, "containerd", "overlayfs-metadata.db")


@pytest.fixture(scope="module")
def containerd_root(tmp_path_factory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    root = str(tmp_path_factory.mktemp("fuzz-containerd") / "containerd")
    snap = os.path.join(root, "io.containerd.snapshotter.v1.overlayfs")
    for i in range(1, 9):
        os.makedirs(os.path.join(snap, "snapshots", str(i), "fs"))
    os.makedirs(os.path.join(root, "io.containerd.metadata.v1.bolt"))
    line = open(os.path.join(SAMPLES, "containerd", "host-mountinfo-ctd-line.txt")).read().replace("/var/lib/containerd", root)
    return {"rr": RuntimeRoots(containerd=[FoundRoot(root, "test")]), "snap_db": os.path.join(snap, "metadata.db"),
            "meta_db": os.path.join(root, "io.containerd.metadata.v1.bolt", "meta.db"), "line": line,
            "db": open(DB_SAMPLE, "rb").read()}


@st.composite
def corrupted_db(draw: st.DrawFn, db: bytes) -> bytes:
    b = bytearray(db)
    for _ in range(draw(st.integers(1, 8))):
        b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        b = b[: draw(st.integers(0, len(b)))]
    return bytes(b)


@FUZZ
@given(st.data(), st.booleans())
def test_containerd_metadata_db(containerd_root: dict[str, Any], data: st.DataObject, as_meta: bool) -> None:
    blob = data.draw(corrupted_db(containerd_root["db"]))
    path = containerd_root["meta_db" if as_meta else "snap_db"]
    with open(path, "wb") as fh:
        fh.write(blob)
    try:
        _exercise(containerd_root["rr"], containerd_root["line"], ["ctd-running"])
    finally:
        os.unlink(path)
    try:
        db = BoltDB(blob)
        for _k, _v in db.walk():
            pass
    except BoltError:
        pass


def _page(pgid: int, flags: int, elems: list[tuple[int, int, int]], size: int = 4096, count: int | None = None) -> bytes:
    """A bbolt page: header (claiming `count` elements) + branch elements (pos, ksize, child pgid)."""
    import struct

    b = bytearray(size)
    struct.pack_into("<QHHI", b, 0, pgid, flags, len(elems) if count is None else count, 0)
    for i, (pos, ksize, child) in enumerate(elems):
        struct.pack_into("<IIQ", b, 16 + 16 * i, pos, ksize, child)
    return bytes(b)


def _meta(pgid: int, root: int, txid: int, size: int = 4096) -> bytes:
    import struct

    from ovlinspect.runtimes.bbolt import MAGIC, VERSION, _fnv64a

    b = bytearray(size)
    struct.pack_into("<QHHI", b, 0, pgid, 0x04, 0, 0)
    body = struct.pack("<IIIIQQQQQ", MAGIC, VERSION, size, 0, root, 0, 0, 4, txid)
    b[16 : 16 + 56] = body
    struct.pack_into("<Q", b, 16 + 56, _fnv64a(body))
    return bytes(b)


def test_bbolt_branch_cycle_and_short_pages_are_bolt_errors() -> None:
    """A branch page that points at itself (65535 times) made the reader loop count^64; an element
    array past the end of an inline page raised struct.error. Both are now BoltError."""
    cyclic = _meta(0, 2, 1) + _meta(1, 2, 0) + _page(2, 0x01, [(0, 0, 2)] * 255)
    with pytest.raises(BoltError):
        list(BoltDB(cyclic).items())
    short = _meta(0, 2, 1) + _meta(1, 2, 0) + _page(2, 0x02, [], count=300)
    with pytest.raises(BoltError):
        list(BoltDB(short).items())


# --- btrfs capture replay -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def btrfs_capture(tmp_path_factory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    cap = str(tmp_path_factory.mktemp("fuzz-btrfs") / "cap")
    shutil.copytree(os.path.join(SAMPLES, "btrfs", "near"), cap)
    with open(os.path.join(cap, "devices.json"), "w") as fh:
        json.dump([{"devid": 1, "path": "/dev/loop0", "total_bytes": 1 << 30, "used_bytes": 1 << 29}], fh)
    with open(os.path.join(cap, "context.json"), "w") as fh:
        json.dump({"mountpoints": ["/mnt"], "docker_roots": ["/var/lib/docker"], "subvolume_count": 3}, fh)
    files = [os.path.join(cap, f) for f in ("sysfs.json", "statvfs.json", "devices.json", "context.json")]
    return {"dir": cap, "files": files, "keys": sorted(json.load(open(files[0]))["attrs"])}


def _replay(cap: str) -> None:
    from rich.console import Console

    from ovlinspect.analysis.btrfs import assess_btrfs
    from ovlinspect.btrfs_sysfs import read_replay
    from ovlinspect.render.btrfs import btrfs_doc, render_reports
    from ovlinspect.render.jsonout import dumps

    try:
        inputs = read_replay(cap)
    except OvlinspectError as exc:
        assert "\n" not in exc.message
        return
    for inp in inputs:
        r = assess_btrfs(inp)
        assert r.verdict in ("ok", "warning", "critical", "unknown")
        json.loads(dumps(btrfs_doc([r], [])))
        render_reports([r], Console(file=io.StringIO(), width=200))


@FUZZ
@given(st.integers(0, 1000), json_corruption())
@example(2, lambda _o: b'[{"devid": [1]}]')  # int() of a list: TypeError
@example(2, lambda _o: b'[{"devid": 1, "path": {}, "total_bytes": [], "used_bytes": "x"}]')
@example(3, lambda _o: b'{"mountpoints": 7}')  # iterating an int: TypeError
def test_btrfs_capture_files(btrfs_capture: dict[str, Any], which: int, corrupt: Callable[[bytes], bytes]) -> None:
    path = btrfs_capture["files"][which % len(btrfs_capture["files"])]
    with _rewritten(path, corrupt(open(path, "rb").read())):
        _replay(btrfs_capture["dir"])


attr_values = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["0", "-1", "-9999999999999", "0x7fffffffffffffff", "18446744073709551615", "9" * 40, " ", "1 2", "abc", "\0", "16384\n"]),
    st.integers(-(2**80), 2**80).map(str),
)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10**6), attr_values), max_size=8),
       st.lists(st.sampled_from(["allocation/metadata/dup/total_bytes", "allocation/data/raid6/total_bytes", "devinfo/7/size",
                                 "devinfo/x/size", "allocation/system/raid1c4/total_bytes", "allocation/metadata/raid10/total_bytes",
                                 "nodesize", "allocation/global_rsv_size"]), max_size=4),
       st.integers(0, 10**6))
def test_btrfs_sysfs_attribute_values(btrfs_capture: dict[str, Any], changes: list[tuple[int, str]], extra: list[str], drop: int) -> None:
    """The sysfs reader's output (attribute text) with any value, extra or missing attributes."""
    path = btrfs_capture["files"][0]
    doc = json.load(open(path))
    keys = btrfs_capture["keys"]
    attrs = dict(doc["attrs"])
    for i, v in changes:
        attrs[keys[i % len(keys)]] = v
    for k in extra:
        attrs[k] = "1"
    if drop % 3 == 0:
        attrs.pop(keys[drop % len(keys)], None)
    with _rewritten(path, json.dumps({**doc, "attrs": attrs}).encode()):
        _replay(btrfs_capture["dir"])


def test_cli_btrfs_replay_of_corrupt_capture_is_one_line(btrfs_capture: dict[str, Any]) -> None:
    runner = CliRunner()
    path = btrfs_capture["files"][0]
    for blob in (b"{not json", b"[" * 100_000):
        with _rewritten(path, blob):
            res = runner.invoke(app, ["btrfs", "--replay", btrfs_capture["dir"]])
        assert res.exit_code == 2, res.output
        assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1 and "Traceback" not in res.output


# --- the same corruptions through the CLI: a declared exit code, at most one `error:` line --------

CLI_FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def _cli_ok(res, codes: tuple[int, ...]) -> None:  # type: ignore[no-untyped-def]
    assert res.exit_code in codes, (res.exit_code, res.output)
    assert "Traceback" not in res.output and "internal error" not in res.stderr, res.stderr
    assert sum(1 for ln in res.stderr.splitlines() if ln.startswith("error:")) <= 1


@CLI_FUZZ
@given(st.integers(0, 1000), json_corruption())
def test_cli_orphans_and_container_tree_on_corrupt_docker_records(docker_root: dict[str, Any], which: int,
                                                                   corrupt: Callable[[bytes], bytes]) -> None:
    root = docker_root["rr"].docker[0].path
    path = docker_root["json"][which % len(docker_root["json"])]
    runner = CliRunner()
    with _rewritten(path, corrupt(open(path, "rb").read())):
        _cli_ok(runner.invoke(app, ["orphans", "--json", "--docker-root", root]), (0, 1, 3))
        env = {"OVLINSPECT_DOCKER_ROOT": root, "OVLINSPECT_PODMAN_ROOT": "", "OVLINSPECT_CONTAINERD_ROOT": ""}
        for cid in docker_root["cids"]:
            _cli_ok(runner.invoke(app, ["tree", "--json", "--container", cid], env=env), (0, 3, 4, 5))


@CLI_FUZZ
@given(st.integers(0, 1000), json_corruption())
def test_cli_orphans_and_image_tree_on_corrupt_podman_records(podman_root: dict[str, Any], which: int,
                                                              corrupt: Callable[[bytes], bytes]) -> None:
    root = podman_root["rr"].podman[0].path
    path = podman_root["files"][which % len(podman_root["files"])]
    runner = CliRunner()
    with _rewritten(path, corrupt(open(path, "rb").read())):
        _cli_ok(runner.invoke(app, ["orphans", "--json", "--podman-root", root]), (0, 1, 3))
        env = {"OVLINSPECT_PODMAN_ROOT": root, "OVLINSPECT_DOCKER_ROOT": "", "OVLINSPECT_CONTAINERD_ROOT": ""}
        for args in (["--container", "pd-created"], ["--image", "localhost/ovl-test/derived:1"]):
            _cli_ok(runner.invoke(app, ["tree", "--json", *args], env=env), (0, 2, 3, 4, 5))
