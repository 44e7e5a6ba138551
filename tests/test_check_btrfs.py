"""`ovlinspect check` on a real btrfs (loop device) laid out like Docker's btrfs driver and driven
to metadata exhaustion with the btrfs tier's recipe (tests/btrfsfs.py): OK and silent while
healthy, WARNING (exit 1) as metadata runs low, CRITICAL (exit 2) at the first ENOSPC on create.
"""

from __future__ import annotations

import json
import os

import pytest
from btrfsfs import LoopBtrfs, fill_data, have_btrfs, make_layers, metadata_files, punch_fill, xattrs_until_enospc
from check_env import run_check

from ovlinspect.btrfs_sysfs import inspect_btrfs
from ovlinspect.hostfs import HostRoots

pytestmark = [pytest.mark.btrfs, pytest.mark.kernel]
SKIP = have_btrfs()


def _check(tmp: str, root: str, *extra: str):  # type: ignore[no-untyped-def]
    return run_check(tmp, "--data-root", root, "--lock", os.path.join(tmp, "lock"), "--disable", "orphan_bytes", *extra)


def _lines(out: str, status: str, cid: str) -> list[str]:
    return [ln.strip() for ln in out.splitlines() if ln.strip().startswith(status) and f" {cid}: " in ln]


def test_btrfs_metadata_exhaustion(tmp_path) -> None:  # type: ignore[no-untyped-def]
    if SKIP:
        pytest.skip(reason=SKIP)
    tmp = str(tmp_path)
    fs = LoopBtrfs.create([256], tmp=tmp)
    try:
        root = os.path.join(fs.mnt, "docker")
        layers = make_layers(root, 5)
        fs.sync()
        healthy = _check(tmp, root)
        assert (healthy.returncode, healthy.stdout, healthy.stderr) == (0, "", ""), healthy
        v = _check(tmp, root, "--verbose")
        assert v.returncode == 0 and "OK       btrfs_metadata: 1 btrfs filesystem(s)" in v.stdout, v.stdout

        # all space allocated to data chunks, most of it freed again: nothing unallocated
        metadata_files(os.path.join(layers[0], "base"), 300)
        punch_fill(fill_data(os.path.join(fs.mnt, "fill")))
        warned: list[object] = []

        def on_batch(n: int) -> None:
            if warned:
                return
            fs.sync()
            reports, _ = inspect_btrfs(HostRoots(), data_roots=[root])
            if reports and reports[0].verdict == "warning":
                r = _check(tmp, root, "--only", "btrfs_metadata")
                warned.append(r)

        made, failed = xattrs_until_enospc(os.path.join(layers[-1], "x"), on_batch)
        assert failed.endswith("ENOSPC") or failed.endswith("EROFS"), failed
        assert warned, "the verdict never passed through WARNING"
        w = warned[0]
        assert w.returncode == 1, w  # type: ignore[attr-defined]
        lines = _lines(w.stdout, "WARNING", "btrfs_metadata")  # type: ignore[attr-defined]
        assert len(lines) == 1 and fs.mnt in lines[0] and "->" in lines[0], w.stdout  # type: ignore[attr-defined]

        fs.sync()
        c = _check(tmp, root, "--only", "btrfs_metadata")
        assert c.returncode == 2, c
        lines = _lines(c.stdout, "CRITICAL", "btrfs_metadata")
        assert len(lines) == 1 and f"btrfs {fs.mnt}" in lines[0], c.stdout
        cv = _check(tmp, root, "--only", "btrfs_metadata", "--verbose")
        assert cv.returncode == 2 and cv.stdout.splitlines()[0].startswith("CRITICAL btrfs_metadata: 1 btrfs")
        # the raw numbers for trend alerts, equal to the btrfs analysis' own
        p = _check(tmp, root, "--only", "btrfs_metadata", "--format", "json")
        doc = json.loads(p.stdout)
        res = next(x for x in doc["checks"] if x["id"] == "btrfs_metadata")
        got = {m["name"]: m["value"] for m in res["metrics"] if m["labels"] == {"filesystem": fs.mnt}}
        reports, _ = inspect_btrfs(HostRoots(), data_roots=[root])
        assert got["ovlinspect_btrfs_verdict_status"] == 2
        assert got["ovlinspect_btrfs_unallocated_bytes"] == reports[0].metrics["unallocated_bytes"]
        assert got["ovlinspect_btrfs_metadata_total_bytes"] == reports[0].metrics["metadata_total_bytes"]
        # switched off, the same state is OK and silent
        off = _check(tmp, root, "--only", "btrfs_metadata", "--disable", "btrfs_metadata")
        assert (off.returncode, off.stdout) == (0, ""), off
    finally:
        fs.close()
