"""Unit tier for `ovlinspect btrfs`: the shared sample captures through --replay, capture/replay
round trips, the pure verdict logic on literals, missing attributes -> unknown (never a crash)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from ovlinspect.analysis.btrfs import (
    BtrfsDevice,
    BtrfsInputs,
    allocatable_chunk_bytes,
    assess_btrfs,
    create_reservation_bytes,
    mirrored_capacity,
)
from ovlinspect.btrfs_sysfs import inspect_btrfs, read_capture
from ovlinspect.cli import app
from ovlinspect.hostfs import HostRoots

# ../shared/samples/README.md: the verdict each captured stage must get
EXPECTED = {
    "healthy": "ok",
    "data-full": "ok",
    "fragmented": "ok",
    "near": "warning",
    "exhausted": "critical",
    "after-delete": "ok",
    "recovered": "ok",
}
runner = CliRunner()


def _usage_numbers(path: str) -> dict[str, int]:
    """Size/Used per type and the overall lines of the sample's `btrfs filesystem usage -b`."""
    from btrfsfs import parse_usage  # tests/ is on sys.path (conftest.py)

    with open(path) as fh:
        return parse_usage(fh.read())  # type: ignore[return-value]


@pytest.mark.parametrize("stage", sorted(EXPECTED))
def test_sample_stage_verdict_via_cli_replay(samples: str, stage: str) -> None:
    d = os.path.join(samples, "btrfs", stage)
    res = runner.invoke(app, ["btrfs", "--replay", d, "--json"])
    doc = json.loads(res.stdout)
    assert doc["schema_version"] == 1
    (fs,) = doc["filesystems"]
    assert fs["verdict"] == EXPECTED[stage], fs["reason"]
    assert res.exit_code == (1 if EXPECTED[stage] in ("warning", "critical") else 0)
    # every number agrees with what btrfs-progs printed for the same moment
    u = _usage_numbers(os.path.join(d, "cli", "btrfs_filesystem_usage_-b.txt"))
    m = fs["metrics"]
    assert m["metadata_total_bytes"] == u["types"]["metadata"]["size"]
    assert m["metadata_used_bytes"] == u["types"]["metadata"]["used"]
    assert m["data_total_bytes"] == u["types"]["data"]["size"]
    assert m["data_used_bytes"] == u["types"]["data"]["used"]
    assert m["system_total_bytes"] == u["types"]["system"]["size"]
    assert m["global_reserve_bytes"] == u["overall"]["Global reserve"]
    assert m["fs_size_bytes"] == u["overall"]["Device size"]
    assert m["allocated_bytes"] == u["overall"]["Device allocated"]
    assert m["unallocated_bytes"] == u["overall"]["Device unallocated"]
    assert m["df_available_bytes"] == u["overall"]["Free (statfs, df)"]
    assert fs["metadata_profile"] == u["types"]["metadata"]["profile"] == "dup"
    with open(os.path.join(d, "cli", "subvolume_count.txt")) as fh:
        assert fs["subvolume_count"] == int(fh.read())


def test_exhausted_sample_numbers(samples: str) -> None:
    (r,), problems = inspect_btrfs(HostRoots(), replay=os.path.join(samples, "btrfs", "exhausted"))
    assert not problems
    # README: total - used - global_rsv (- readonly) was 3,915,776; the unallocated 1 MiB is the
    # reserved start of the device
    assert r.metrics["metadata_free_bytes"] == 3_915_776
    assert r.metrics["unallocated_bytes"] == 1024 * 1024
    assert r.can_allocate_metadata_chunk is False
    assert r.metrics["create_reservation_bytes"] == 3_932_160
    assert "ENOSPC" in r.reason
    # remedies: free metadata first, then small -dusage balances, never metadata, then a device
    assert [k in s for k, s in zip(("prune", "-dusage=5", "Never balance metadata", "device add"), r.remedies, strict=True)] == [True] * 4


def test_replay_folder_of_captures_and_text_output(samples: str) -> None:
    res = runner.invoke(app, ["btrfs", "--replay", os.path.join(samples, "btrfs")])
    assert res.exit_code == 1  # one stage is critical
    assert res.stdout.count("btrfs 8f3528a9") == len(EXPECTED)
    for word in ("OK", "WARNING", "CRITICAL", "what to do, in this order", "Never balance metadata"):
        assert word in res.stdout
    doc = json.loads(runner.invoke(app, ["btrfs", "--replay", os.path.join(samples, "btrfs"), "--json"]).stdout)
    assert doc["verdict"] == "critical"
    assert sorted(f["verdict"] for f in doc["filesystems"]) == sorted(EXPECTED.values())


def test_capture_of_a_replay_round_trips(samples: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = os.path.join(samples, "btrfs", "near")
    out = tmp_path / "cap"
    (r1,), _ = inspect_btrfs(HostRoots(), replay=src, capture=str(out))
    (fsdir,) = os.listdir(out)
    assert fsdir == r1.fsid
    for name in ("sysfs.json", "statvfs.json", "context.json", "sysfs/allocation/metadata/bytes_used"):
        assert os.path.exists(out / fsdir / name)
    (r2,), _ = inspect_btrfs(HostRoots(), replay=str(out))
    assert (r2.verdict, r2.metrics, r2.subvolume_count, r2.mountpoints) == (r1.verdict, r1.metrics, r1.subvolume_count, r1.mountpoints)
    # the sysfs/ tree alone (no sysfs.json) replays the same
    os.unlink(out / fsdir / "sysfs.json")
    r3 = assess_btrfs(read_capture(str(out / fsdir)))
    assert (r3.verdict, r3.metrics) == (r1.verdict, r1.metrics)


def test_missing_attributes_give_unknown_not_a_crash(samples: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "cap"
    shutil.copytree(os.path.join(samples, "btrfs", "exhausted"), d)
    with open(d / "sysfs.json") as fh:
        doc = json.load(fh)
    attrs = doc["attrs"]
    for gone in ("allocation/metadata/bytes_used", "allocation/global_rsv_size", "nodesize"):
        attrs.pop(gone)
    with open(d / "sysfs.json", "w") as fh:
        json.dump(doc, fh)
    res = runner.invoke(app, ["btrfs", "--replay", str(d), "--json"])
    assert res.exit_code == 3, res.output
    (fs,) = json.loads(res.stdout)["filesystems"]
    assert fs["verdict"] == "unknown"
    assert "allocation/metadata/bytes_used" in fs["reason"]
    assert fs["metrics"]["metadata_used_bytes"] is None
    # an empty capture (kernel with none of the attributes) is unknown too
    r = assess_btrfs(BtrfsInputs(fsid="x", attrs={}))
    assert r.verdict == "unknown" and r.metrics["fs_size_bytes"] is None


def test_replay_errors_are_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = runner.invoke(app, ["btrfs", "--replay", str(tmp_path / "nope")])
    assert res.exit_code == 4 and "error:" in res.stderr and "Traceback" not in res.output
    res = runner.invoke(app, ["btrfs", "--replay", str(tmp_path)])
    assert res.exit_code == 2 and "no btrfs capture" in res.stderr
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "sysfs.json").write_text("{not json")
    res = runner.invoke(app, ["btrfs", "--replay", str(tmp_path / "x")])
    assert res.exit_code == 2 and "cannot read capture file" in res.stderr


# --- pure logic on literals ---------------------------------------------------------------------
def test_create_reservation_matches_kernel_formula() -> None:
    # nodesize * BTRFS_MAX_LEVEL * 2 * 5 items, plus the delayed refs (x2 with free-space tree)
    assert create_reservation_bytes(16384, True) == 16384 * 8 * 2 * 5 * 3
    assert create_reservation_bytes(16384, False) == 16384 * 8 * 2 * 5 * 2
    assert create_reservation_bytes(4096, True) == 983_040


def test_chunk_allocation_needs_enough_devices() -> None:
    MiB = 1 << 20
    assert allocatable_chunk_bytes([100 * MiB], "dup") == (50 * MiB, True)
    assert allocatable_chunk_bytes([100 * MiB], "single") == (100 * MiB, True)
    # RAID1 needs room on two devices: a GiB on one device is worth nothing
    assert allocatable_chunk_bytes([1024 * MiB, 0], "raid1") == (0, False)
    assert allocatable_chunk_bytes([300 * MiB, 100 * MiB], "raid1") == (100 * MiB, True)
    assert mirrored_capacity([100, 100, 100], 2) == 150
    assert mirrored_capacity([100, 100, 100], 3) == 100
    # below BTRFS_STRIPE_LEN * dev_stripes a device does not count
    assert allocatable_chunk_bytes([100 * 1024], "dup") == (0, False)


def _attrs(meta_total: int, meta_used: int, data_total: int, rsv: int = 5767168, profile: str = "dup", ndev: int = 1) -> dict[str, str]:
    ncopies = 2 if profile in ("dup", "raid1") else 1
    return {f"devinfo/{i}/missing": "0\n" for i in range(1, ndev + 1)} | {
        "nodesize": "16384\n",
        "features/free_space_tree": "1\n",
        "allocation/global_rsv_size": f"{rsv}\n",
        "allocation/global_rsv_reserved": f"{rsv}\n",
        "allocation/metadata/total_bytes": f"{meta_total}\n",
        "allocation/metadata/bytes_used": f"{meta_used}\n",
        "allocation/metadata/disk_total": f"{meta_total * ncopies}\n",
        "allocation/metadata/chunk_size": "268435456\n",
        f"allocation/metadata/{profile}/total_bytes": f"{meta_total}\n",
        "allocation/data/total_bytes": f"{data_total}\n",
        "allocation/data/bytes_used": "0\n",
        "allocation/data/disk_total": f"{data_total}\n",
        "allocation/data/single/total_bytes": f"{data_total}\n",
        "allocation/system/total_bytes": "8388608\n",
        "allocation/system/disk_total": f"{8388608 * ncopies}\n",
    }


def test_per_device_space_decides_raid1() -> None:
    MiB = 1 << 20
    attrs = _attrs(100 * MiB, 96 * MiB - 5767168, 1000 * MiB, profile="raid1", ndev=2)
    allocated = 100 * MiB * 2 + 1000 * MiB + 16 * MiB
    # 1 GiB unallocated, but all on device 2: RAID1 metadata cannot get a chunk
    devs = (BtrfsDevice(1, "/dev/a", 609 * MiB, 608 * MiB), BtrfsDevice(2, "/dev/b", allocated - 608 * MiB + 1024 * MiB + MiB, allocated - 608 * MiB))
    r = assess_btrfs(BtrfsInputs("f", attrs, devices=devs))
    assert r.metrics["unallocated_bytes"] == 1026 * MiB  # 1 MiB (reserved) on device 1 + 1025 MiB on 2
    assert r.can_allocate_metadata_chunk is False
    assert r.verdict == "warning"  # 4 MiB free beyond the reserve: between 3.75 and 11.25 MiB
    assert any("too few devices" in n for n in r.notes)
    # the same numbers without per-device sizes: it cannot be told (never a false OK)
    r2 = assess_btrfs(BtrfsInputs("f", attrs, statvfs={"f_blocks": (allocated + 1026 * MiB) // 4096, "f_frsize": 4096, "f_bavail": 0}))
    assert r2.can_allocate_metadata_chunk is None and r2.verdict == "unknown"
    # room on both devices: OK
    devs3 = (BtrfsDevice(1, "/dev/a", 1200 * MiB, 608 * MiB), BtrfsDevice(2, "/dev/b", 1200 * MiB, 608 * MiB))
    assert assess_btrfs(BtrfsInputs("f", attrs, devices=devs3)).verdict == "ok"


def test_threshold_is_bytes_not_percent() -> None:
    MiB = 1 << 20
    # same 82 % "used" on a small and a big metadata pool: only the small one is in trouble
    small = assess_btrfs(BtrfsInputs("s", _attrs(50 * MiB, 41 * MiB, 900 * MiB), statvfs={"f_blocks": (100 + 900 + 16 + 1) * 256, "f_frsize": 4096}))
    big = assess_btrfs(BtrfsInputs("b", _attrs(5000 * MiB, 4100 * MiB, 90000 * MiB), statvfs={"f_blocks": (5000 * 2 + 90000 + 16 + 1) * 256, "f_frsize": 4096}))
    assert small.verdict == "critical" and big.verdict == "ok"
    assert small.can_allocate_metadata_chunk is False and big.can_allocate_metadata_chunk is False


def test_hostile_names_are_escaped_in_text_and_kept_in_json(samples: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "cap"
    shutil.copytree(os.path.join(samples, "btrfs", "healthy"), d)
    evil = "/mnt/\x1b]0;pwned\x07[bold red]x[/]\udcff"
    (d / "context.json").write_text(json.dumps({"mountpoints": [evil], "docker_roots": [evil + "/docker"], "subvolume_count": 3}, ensure_ascii=True))
    res = runner.invoke(app, ["btrfs", "--replay", str(d)])
    assert res.exit_code == 0
    assert "\x1b" not in res.stdout and "\x07" not in res.stdout
    assert "\\e]0;pwned\\x07[bold red]x[/]\\xff" in res.stdout  # shown literally, not as markup
    doc = json.loads(runner.invoke(app, ["btrfs", "--replay", str(d), "--json"]).stdout)
    fs = doc["filesystems"][0]
    import base64

    assert base64.b64decode(fs["mountpoints_b64"][0]) == os.fsencode(evil)
    assert fs["subvolume_count"] == 3 and fs["statvfs"]["f_blocks"] == 262144
