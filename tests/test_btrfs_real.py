"""btrfs tier: real btrfs on loop devices, laid out like Docker's btrfs driver, driven to metadata
ENOSPC; the verdict is checked at every stage and every number against `btrfs filesystem usage -b`.

Needs root, loop devices and btrfs-progs (scripts/test-packages.txt); skipped with the reason
elsewhere, a failure under CI=true (conftest.py).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os

import pytest
from btrfsfs import (
    LoopBtrfs,
    delete_layers,
    fill_data,
    have_btrfs,
    make_layers,
    metadata_files,
    punch_fill,
    run,
    usage,
    xattrs_until_enospc,
)
from typer.testing import CliRunner

from ovlinspect.analysis.btrfs import BtrfsReport, assess_btrfs
from ovlinspect.btrfs_sysfs import gather_live, inspect_btrfs
from ovlinspect.cli import app
from ovlinspect.hostfs import HostRoots

pytestmark = pytest.mark.btrfs
SKIP = have_btrfs()
runner = CliRunner()
MiB = 1 << 20


@pytest.fixture
def make_fs(tmp_path):  # type: ignore[no-untyped-def]
    if SKIP:
        pytest.skip(reason=SKIP)
    made: list[LoopBtrfs] = []

    def make(sizes: list[int], mkfs_args: list[str] | None = None) -> LoopBtrfs:
        fs = LoopBtrfs.create(sizes, mkfs_args, tmp=str(tmp_path))
        made.append(fs)
        return fs

    yield make
    for fs in made:
        fs.close()  # unmount and detach the loop devices, whatever happened


def assess(fs: LoopBtrfs, data_root: str) -> BtrfsReport:
    """Commit, then inspect through the default discovery (the data root's backing btrfs)."""
    fs.sync()
    reports, problems = inspect_btrfs(HostRoots(), data_roots=[data_root])
    mine = [r for r in reports if r.fsid == fs.fsid]
    assert len(mine) == 1, (reports, problems)
    return mine[0]


def compare_with_usage(fs: LoopBtrfs, data_root: str) -> BtrfsReport:
    """Every number we report equals `btrfs filesystem usage -b` on the same, settled filesystem."""
    for _attempt in range(3):  # background work (cleaner, discard) may move a number in between
        r = assess(fs, data_root)
        u = usage(fs.mnt)
        m, t, o = r.metrics, u["types"], u["overall"]
        mine = {
            "metadata size": m["metadata_total_bytes"], "metadata used": m["metadata_used_bytes"],
            "data size": m["data_total_bytes"], "data used": m["data_used_bytes"],
            "system size": m["system_total_bytes"], "system used": m["system_used_bytes"],
            "global reserve": m["global_reserve_bytes"], "device size": m["fs_size_bytes"],
            "allocated": m["allocated_bytes"], "unallocated": m["unallocated_bytes"],
            "df available": m["df_available_bytes"], "metadata profile": r.metadata_profile,
            "data profile": r.data_profile,
            "per-device unallocated": {d.path: d.unallocated_bytes for d in r.devices},
        }
        theirs = {
            "metadata size": t["metadata"]["size"], "metadata used": t["metadata"]["used"],
            "data size": t["data"]["size"], "data used": t["data"]["used"],
            "system size": t["system"]["size"], "system used": t["system"]["used"],
            "global reserve": o["Global reserve"], "device size": o["Device size"],
            "allocated": o["Device allocated"], "unallocated": o["Device unallocated"],
            "df available": o["Free (statfs, df)"], "metadata profile": t["metadata"]["profile"],
            "data profile": t["data"]["profile"],
            "per-device unallocated": u["unallocated"],
        }
        if mine == theirs:
            return r
    assert mine == theirs
    return r


def sysfs_only(r_inputs_fs: LoopBtrfs, data_root: str) -> BtrfsReport:
    """The verdict from sysfs + statvfs alone (no ioctl): drop the per-device sizes."""
    inputs, _ = gather_live(HostRoots(), [r_inputs_fs.mnt])
    return assess_btrfs(dataclasses.replace(inputs[0], devices=None))


def can_create(path: str) -> int:
    """0 when a new file can be created in `path`, else the errno."""
    try:
        os.close(os.open(os.path.join(path, "probe-create"), os.O_CREAT | os.O_WRONLY, 0o644))
        os.unlink(os.path.join(path, "probe-create"))
        return 0
    except OSError as exc:
        return exc.errno or -1


@pytest.mark.parametrize(
    "sizes,mkfs_args",
    [([1024], ["-m", "dup"]), ([1024], ["-m", "single"]), ([256], [])],
    ids=["1GiB-dup-metadata", "1GiB-single-metadata", "256MiB"],
)
def test_drive_to_metadata_enospc_and_back(make_fs, sizes, mkfs_args) -> None:  # type: ignore[no-untyped-def]
    fs = make_fs(sizes, mkfs_args)
    root = os.path.join(fs.mnt, "docker")
    layers = make_layers(root, 5)

    # healthy: a few layers, lots unallocated
    r = compare_with_usage(fs, root)
    assert r.verdict == "ok", r.reason
    assert r.can_allocate_metadata_chunk is True
    assert r.subvolume_count == 5 == len(run("btrfs", "subvolume", "list", fs.mnt).stdout.splitlines())
    assert r.docker_roots == [os.path.realpath(root)]
    assert r.mountpoints == [fs.mnt]

    # some metadata in use (a base image's worth), then data written until ENOSPC: all allocated
    metadata_files(os.path.join(layers[0], "base"), 300)
    fill = fill_data(os.path.join(fs.mnt, "fill"))
    r = compare_with_usage(fs, root)
    assert r.metrics["unallocated_bytes"] == MiB  # the reserved first MiB only
    assert r.can_allocate_metadata_chunk is False
    assert r.verdict == "ok", r.reason
    assert any("all space is allocated" in n for n in r.notes)

    # 3 of 4 fill files deleted: data chunks mostly empty but still allocated; df shows free space
    punch_fill(fill)
    r = compare_with_usage(fs, root)
    assert r.verdict == "ok" and r.can_allocate_metadata_chunk is False
    assert r.metrics["df_available_bytes"] > sizes[0] * MiB // 4

    # large xattrs in the top layer until ENOSPC: OK -> WARNING -> CRITICAL, never back
    seen: list[tuple[int, str, int]] = []
    made, failed = xattrs_until_enospc(
        os.path.join(layers[-1], "x"),
        lambda n: seen.append((n, (rr := assess(fs, root)).verdict, rr.metrics["metadata_free_bytes"])),
    )
    assert failed.endswith("ENOSPC"), failed
    verdicts = [v for _, v, _ in seen]
    assert verdicts[0] == "ok"
    assert "warning" in verdicts, seen[-10:]
    order = {"ok": 0, "warning": 1, "critical": 2}
    assert all(order[a] <= order[b] for a, b in zip(verdicts, verdicts[1:], strict=False)), seen
    r = compare_with_usage(fs, root)
    assert r.verdict == "critical", (r.reason, r.metrics)
    assert r.metrics["metadata_free_bytes"] < r.metrics["create_reservation_bytes"]
    assert can_create(fs.mnt) == errno.ENOSPC  # what CRITICAL means
    if r.metadata_profile == "dup":
        # ... while df shows plenty free (with single metadata, btrfs_statfs()'s own check on raw
        # free metadata vs the global reserve zeroes f_bavail at this point; with DUP it does not)
        assert r.metrics["df_available_bytes"] > 100 * MiB
    assert [s.split(" ")[0] for s in r.remedies][:1] == ["Free"]
    # the command says so too, with exit 1
    res = runner.invoke(app, ["btrfs", root, "--json"])
    assert res.exit_code == 1
    assert json.loads(res.stdout)["filesystems"][0]["verdict"] == "critical"

    # delete layers (the remedy's first step): metadata freed, still nothing unallocated
    delete_layers(layers[1:], fs.mnt)
    r = compare_with_usage(fs, root)
    assert r.verdict == "ok", r.reason
    assert r.subvolume_count == 1
    assert can_create(fs.mnt) == 0

    # then balance data chunks in small steps until there is unallocated space again
    for pct in (5, 10, 20, 30, 60):
        run("btrfs", "balance", "start", f"-dusage={pct}", fs.mnt)
        r = compare_with_usage(fs, root)
        if r.can_allocate_metadata_chunk:
            break
    assert r.verdict == "ok" and r.can_allocate_metadata_chunk is True, r.reason
    assert r.metrics["unallocated_bytes"] > 20 * MiB


def test_raid1_metadata_needs_space_on_two_devices(make_fs) -> None:  # type: ignore[no-untyped-def]
    fs = make_fs([512, 512], ["-m", "raid1", "-d", "single"])
    root = os.path.join(fs.mnt, "docker")
    layers = make_layers(root, 3)
    r = compare_with_usage(fs, root)
    assert r.verdict == "ok" and r.metadata_profile == "raid1" and len(r.devices) == 2
    metadata_files(os.path.join(layers[0], "base"), 300)
    punch_fill(fill_data(os.path.join(fs.mnt, "fill")))
    # grow device 2 by 1 GiB: lots unallocated, but only on one device
    fs.grow_device(1, 1024)
    r = compare_with_usage(fs, root)
    per_dev = {d.devid: d.unallocated_bytes for d in r.devices}
    assert per_dev[1] == MiB and per_dev[2] >= 1024 * MiB
    assert r.metrics["unallocated_bytes"] >= 1024 * MiB
    assert r.can_allocate_metadata_chunk is False  # RAID1 needs a stripe on 2 devices
    assert any("too few devices" in n for n in r.notes)
    # sysfs alone cannot see the distribution: it must not claim a chunk can be allocated
    assert sysfs_only(fs, root).can_allocate_metadata_chunk is None

    seen: list[tuple[int, str, int, int]] = []

    def batch(n: int) -> None:
        rr = assess(fs, root)
        seen.append((n, rr.verdict, rr.metrics["metadata_free_bytes"], rr.metrics["unallocated_bytes"]))

    made, failed = xattrs_until_enospc(os.path.join(layers[-1], "x"), batch)
    verdicts = [v for _, v, _, _ in seen]
    assert verdicts[0] == "ok" and "warning" in verdicts and "critical" in verdicts, seen[-5:]
    assert verdicts.index("warning") < verdicts.index("critical")
    # the verdict went CRITICAL while a GiB was still unallocated (on one device): the kernel
    # overcommits against it, and the end is ENOSPC or an aborted transaction (read-only)
    first_critical = seen[verdicts.index("critical")]
    assert first_critical[3] >= 1024 * MiB
    assert failed.split(":")[1] in ("ENOSPC", "EROFS")


def test_live_capture_replay_round_trip_and_cli(make_fs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    fs = make_fs([256])
    root = os.path.join(fs.mnt, "docker")
    make_layers(root, 2)
    fs.sync()
    cap = tmp_path / "cap"
    res = runner.invoke(app, ["btrfs", root, "--capture", str(cap), "--json"])
    assert res.exit_code == 0, res.output
    live = json.loads(res.stdout)["filesystems"][0]
    fsdir = cap / fs.fsid
    assert live["fsid"] == fs.fsid and live["subvolume_count"] == 2
    # the layout: one file per attribute, symlinks (devices/loopN, bdi) not followed
    assert (fsdir / "sysfs" / "allocation" / "metadata" / "bytes_used").is_file()
    assert not (fsdir / "sysfs" / "devices").exists() or not any((fsdir / "sysfs" / "devices").iterdir())
    assert not (fsdir / "sysfs" / "bdi").exists()
    with open(fsdir / "sysfs.json") as fh:
        sj = json.load(fh)
    assert sj["fsid"] == fs.fsid
    assert sj["attrs"]["allocation/metadata/bytes_used"] == (fsdir / "sysfs" / "allocation" / "metadata" / "bytes_used").read_text()
    with open(fsdir / "statvfs.json") as fh:
        sv = json.load(fh)
    st = os.statvfs(fs.mnt)
    assert sv["f_blocks"] == st.f_blocks and sv["mountpoint"] == fs.mnt
    # replay gives the same report
    rep = json.loads(runner.invoke(app, ["btrfs", "--replay", str(fsdir), "--json"]).stdout)["filesystems"][0]
    for key in ("verdict", "reason", "metrics", "metadata_profile", "subvolume_count", "mountpoints", "docker_roots", "devices"):
        assert rep[key] == live[key], key
    # and the folder of captures too
    assert json.loads(runner.invoke(app, ["btrfs", "--replay", str(cap), "--json"]).stdout)["filesystems"][0]["metrics"] == live["metrics"]

    # discovery: by data root, by --all, and "none found"
    doc = json.loads(runner.invoke(app, ["btrfs", "--data-root", root, "--json"]).stdout)
    assert [f["fsid"] for f in doc["filesystems"]] == [fs.fsid]
    doc = json.loads(runner.invoke(app, ["btrfs", "--all", "--json"]).stdout)
    assert fs.fsid in [f["fsid"] for f in doc["filesystems"]]
    res = runner.invoke(app, ["btrfs", "--data-root", str(tmp_path)])
    assert res.exit_code == 0 and "no btrfs filesystem backing a container data root" in res.stdout
    # text output names the filesystem and its layers
    res = runner.invoke(app, ["btrfs", fs.mnt])
    assert res.exit_code == 0 and fs.fsid in res.stdout and "OK" in res.stdout


def test_path_not_on_btrfs_is_exit_4(tmp_path) -> None:  # type: ignore[no-untyped-def]
    if fs_type(str(tmp_path)) == "btrfs":
        pytest.skip(reason="tmp is on btrfs here")
    res = runner.invoke(app, ["btrfs", str(tmp_path)])
    assert res.exit_code == 4 and "is not on a btrfs filesystem" in res.stderr


def fs_type(path: str) -> str:
    return run("findmnt", "-n", "-o", "FSTYPE", "--target", path).stdout.strip()


def test_overlay_upper_on_btrfs_is_discovered(make_fs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """overlay2 on a btrfs backing filesystem: the upper dir's btrfs is found with no data root."""
    from ovl import mount_legacy, umount

    fs = make_fs([256])
    base = os.path.join(fs.mnt, "overlay2", "abc")
    for d in ("lower", "diff", "work", "merged"):
        os.makedirs(os.path.join(base, d))
    merged = os.path.join(base, "merged")
    mount_legacy(merged, [os.path.join(base, "lower")], os.path.join(base, "diff"), os.path.join(base, "work"))
    try:
        reports, problems = inspect_btrfs(HostRoots())  # defaults + overlay upper dirs
        mine = [r for r in reports if r.fsid == fs.fsid]
        assert len(mine) == 1, (reports, problems)
        assert os.path.join(base, "diff") in mine[0].docker_roots
        assert mine[0].verdict == "ok"
    finally:
        umount(merged)


def test_verdict_needs_no_root(make_fs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """sysfs and statvfs are world-readable: the same verdict as an unprivileged user."""
    if SKIP:
        pytest.skip(reason=SKIP)
    fs = LoopBtrfs.create([256])  # under /tmp, not in pytest's root-only tmp dir
    try:
        _check_unprivileged(fs)
    finally:
        fs.close()


def _check_unprivileged(fs: LoopBtrfs) -> None:
    root = os.path.join(fs.mnt, "docker")
    make_layers(root, 2)
    os.chmod(fs.tmp, 0o755)
    fs.sync()
    as_root = json.loads(runner.invoke(app, ["btrfs", fs.mnt, "--json"]).stdout)["filesystems"][0]
    import subprocess
    import sys

    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "ovlinspect", "btrfs", fs.mnt, "--json"],
        capture_output=True, text=True, check=False, cwd="/",
        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))},
    )
    assert out.returncode == 0, out.stderr
    nobody = json.loads(out.stdout)["filesystems"][0]
    assert nobody["verdict"] == as_root["verdict"] == "ok"
    for key in ("metadata_total_bytes", "metadata_used_bytes", "global_reserve_bytes", "fs_size_bytes", "unallocated_bytes"):
        assert nobody["metrics"][key] == as_root["metrics"][key], key


def test_mixed_block_groups(make_fs) -> None:  # type: ignore[no-untyped-def]
    """Small filesystems made with --mixed: data and metadata share chunks (allocation/mixed/)."""
    fs = make_fs([256], ["--mixed"])
    root = os.path.join(fs.mnt, "docker")
    make_layers(root, 2)
    r = assess(fs, root)
    u = usage(fs.mnt)["overall"]
    assert r.verdict == "ok" and any("mixed block groups" in n for n in r.notes)
    assert (r.metrics["fs_size_bytes"], r.metrics["allocated_bytes"], r.metrics["unallocated_bytes"], r.metrics["global_reserve_bytes"]) == (
        u["Device size"], u["Device allocated"], u["Device unallocated"], u["Global reserve"])
    fill_data(os.path.join(fs.mnt, "fill"))
    r = assess(fs, root)
    assert r.verdict == "critical", r.reason
    assert can_create(fs.mnt) == errno.ENOSPC
