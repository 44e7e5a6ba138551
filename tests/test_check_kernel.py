"""`ovlinspect check` on real state: loop filesystems, real overlay mounts, a hung FUSE mount.

Every test runs the real CLI (tests/check_env.py: a sandbox namespace holding only this test's
overlay mounts) and asserts the exit code, the quiet output (nothing when OK) and the verbose one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from check_env import loopfs, run_check, sh
from ovl import mount_legacy, umount

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("root_required")]


def base_args(tmp: str, *extra: str) -> list[str]:
    """Pin everything to the test's own state: no host data roots, its own lock, no orphan scan
    (that one reads the host's runtimes; tests/test_check_unit.py covers its thresholds)."""
    return ["--data-root", os.path.join(tmp, "no-such-root"), "--lock", os.path.join(tmp, "check.lock"),
            "--disable", "orphan_bytes", "--timeout", "30", *extra]


def check(tmp: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_check(tmp, *base_args(tmp, *extra))


def check_json(tmp: str, *extra: str) -> tuple[int, dict]:
    r = check(tmp, "--format", "json", *extra)
    assert r.stderr == "", r.stderr
    return r.returncode, json.loads(r.stdout)


def result(doc: dict, cid: str) -> dict:
    return next(c for c in doc["checks"] if c["id"] == cid)


def metric(doc: dict, cid: str, name: str, **labels: str) -> float:
    for m in result(doc, cid)["metrics"]:
        if m["name"] == name and all(m["labels"].get(k) == v for k, v in labels.items()):
            return m["value"]
    raise AssertionError(f"{name}{labels} not in {result(doc, cid)['metrics']}")


def assert_ok_quiet_and_verbose(tmp: str, *extra: str, expect_checks: tuple[str, ...] = ()) -> None:
    r = check(tmp, *extra)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r
    v = check(tmp, "--verbose", *extra)
    assert v.returncode == 0, v
    for cid in expect_checks:
        assert any(line.startswith("OK") and f" {cid}:" in line for line in v.stdout.splitlines()), v.stdout
    assert v.stdout.rstrip().splitlines()[-1].startswith("ovlinspect check: OK")


def finding_lines(out: str, status: str, cid: str) -> list[str]:
    return [ln.strip() for ln in out.splitlines() if ln.strip().startswith(f"{status}") and f" {cid}: " in ln]


@pytest.fixture
def tmp(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return str(tmp_path)


@pytest.fixture
def upperfs(tmp: str):  # type: ignore[no-untyped-def]
    """A loop ext4 of the test's own for upper dirs, so the space and inode checks never depend
    on how full the machine's root filesystem happens to be."""
    with loopfs(os.path.join(tmp, "upperfs"), 32, ["mkfs.ext4", "-q", "-F", "-O", "^has_journal"]) as fs:
        yield fs


# ---------------------------------------------------------------------------------------------
def _overlay_on(tmp: str, upper_fs: str, name: str = "m") -> str:
    low = os.path.join(tmp, "low")
    os.makedirs(low, exist_ok=True)
    with open(os.path.join(low, "hello"), "w") as fh:
        fh.write("hi")
    up, work, mnt = os.path.join(upper_fs, "upper"), os.path.join(upper_fs, "work"), os.path.join(tmp, name)
    for d in (up, work, mnt):
        os.makedirs(d, exist_ok=True)
    mount_legacy(mnt, [low], up, work)
    return mnt


def test_inode_exhaustion_on_real_ext4(tmp: str) -> None:
    """A small ext4 holding an upper dir: healthy -> OK and silent; inodes used up -> CRITICAL,
    while free space is still fine (the classic ENOSPC with `df` showing room)."""
    with loopfs(os.path.join(tmp, "small"), 16, ["mkfs.ext4", "-q", "-F", "-N", "256", "-O", "^has_journal"]) as fs:
        mnt = _overlay_on(tmp, fs)
        try:
            assert_ok_quiet_and_verbose(tmp, expect_checks=("fs_free_inodes", "fs_free_space", "backing_dtype", "layer_missing"))
            fill = os.path.join(fs, "fill")
            os.mkdir(fill)
            n = 0
            while True:
                try:
                    os.close(os.open(os.path.join(fill, f"f{n}"), os.O_CREAT | os.O_WRONLY, 0o644))
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
                n += 1
            st = os.statvfs(fs)
            assert st.f_favail == 0 and st.f_bavail > st.f_blocks // 2  # no inodes, plenty of space
            r = check(tmp)
            assert r.returncode == 2, r
            lines = finding_lines(r.stdout, "CRITICAL", "fs_free_inodes")
            assert len(lines) == 1 and fs in lines[0] and "0 of " in lines[0] and "->" in lines[0], r.stdout
            assert "fs_free_space" not in r.stdout  # space is fine: not reported when quiet
            assert r.stdout.splitlines()[-1].startswith("ovlinspect check: CRITICAL")
            v = check(tmp, "--verbose")
            assert v.returncode == 2 and any(ln.startswith("OK") and " fs_free_space:" in ln for ln in v.stdout.splitlines())
            code, doc = check_json(tmp)
            assert code == 2 and doc["status_text"] == "CRITICAL"
            assert result(doc, "fs_free_inodes")["status"] == 2 and result(doc, "fs_free_space")["status"] == 0
            # the raw numbers are the kernel's: cross-check with GNU df
            df = sh("df", "--output=itotal,iavail", fs).stdout.split()
            assert metric(doc, "fs_free_inodes", "ovlinspect_filesystem_inodes", filesystem=fs) == int(df[2])
            assert metric(doc, "fs_free_inodes", "ovlinspect_filesystem_inodes_free", filesystem=fs) == int(df[3]) == 0
            # thresholds: with CRITICAL off the same state is a WARNING (exit 1)
            w = check(tmp, "--set", "fs_free_inodes.critical_percent=0")
            assert w.returncode == 1 and finding_lines(w.stdout, "WARNING", "fs_free_inodes"), w
            # and the switch: the check disabled -> OK and silent
            off = check(tmp, "--disable", "fs_free_inodes")
            assert (off.returncode, off.stdout) == (0, ""), off
        finally:
            umount(mnt)


def test_backing_fs_without_dtype(tmp: str) -> None:
    """ext4 without the `filetype` feature returns DT_UNKNOWN from readdir, like xfs ftype=0; the
    kernel still mounts an overlay on it (with "upper fs needs to support d_type")."""
    with loopfs(os.path.join(tmp, "nodt"), 16, ["mkfs.ext4", "-q", "-F", "-O", "^filetype,^has_journal"]) as fs:
        mnt = _overlay_on(tmp, fs)
        try:
            r = check(tmp)
            assert r.returncode == 2, r
            lines = finding_lines(r.stdout, "CRITICAL", "backing_dtype")
            assert len(lines) == 1 and fs in lines[0] and "DT_UNKNOWN" in lines[0], r.stdout
            code, doc = check_json(tmp)
            assert metric(doc, "backing_dtype", "ovlinspect_filesystem_dtype_supported", filesystem=fs) == 0
            off = check(tmp, "--disable", "backing_dtype")
            assert (off.returncode, off.stdout) == (0, ""), off
        finally:
            umount(mnt)
    # the same layout on an ext4 with file types: OK, silent
    with loopfs(os.path.join(tmp, "dt"), 16, ["mkfs.ext4", "-q", "-F", "-O", "^has_journal"]) as fs:
        mnt = _overlay_on(tmp, fs, "m2")
        try:
            assert_ok_quiet_and_verbose(tmp, expect_checks=("backing_dtype",))
            code, doc = check_json(tmp)
            assert metric(doc, "backing_dtype", "ovlinspect_filesystem_dtype_supported", filesystem=fs) == 1
        finally:
            umount(mnt)


@pytest.mark.skipif(shutil.which("mkfs.xfs") is None, reason="xfsprogs not installed (scripts/test-packages.txt)")
def test_xfs_ftype0(tmp: str) -> None:
    """xfs ftype=0 exists only in the V4 format; kernels built without CONFIG_XFS_SUPPORT_V4 (this
    6.18 one) refuse to mount it at all, so no upper dir can live there. When the kernel mounts it,
    the check must report CRITICAL with the xfs remedy; when it refuses, we prove the refusal and
    that a mountable xfs (ftype=1) is probed for real and reported OK."""
    img = os.path.join(tmp, "x0.img")
    with open(img, "wb") as fh:
        fh.truncate(320 * 1024 * 1024)
    sh("mkfs.xfs", "-q", "-f", "-m", "crc=0", "-n", "ftype=0", img)
    mp = os.path.join(tmp, "x0")
    os.mkdir(mp)
    refused = subprocess.run(["mount", "-o", "loop", img, mp], capture_output=True, text=True)
    if refused.returncode == 0:
        mnt = _overlay_on(tmp, mp)
        try:
            r = check(tmp)
            assert r.returncode == 2 and finding_lines(r.stdout, "CRITICAL", "backing_dtype"), r
            assert "mkfs.xfs -n ftype=1" in r.stdout
        finally:
            umount(mnt)
            sh("umount", "-l", mp)
    else:
        assert "wrong fs type" in refused.stderr or "bad superblock" in refused.stderr, refused
        assert not any(f" {mp} " in ln for ln in open("/proc/self/mountinfo"))
    with loopfs(os.path.join(tmp, "x1"), 320, ["mkfs.xfs", "-q", "-f", "-n", "ftype=1"]) as fs:
        mnt = _overlay_on(tmp, fs, "m2")
        try:
            assert_ok_quiet_and_verbose(tmp, expect_checks=("backing_dtype",))
            code, doc = check_json(tmp)
            assert metric(doc, "backing_dtype", "ovlinspect_filesystem_dtype_supported", filesystem=fs, fstype="xfs") == 1
        finally:
            umount(mnt)


def test_deleted_layer_dir(tmp: str, upperfs: str) -> None:
    """A lower layer dir deleted under a live mount: CRITICAL layer_missing, in every format."""
    l1, l2, mnt = (os.path.join(tmp, n) for n in ("l1", "l2", "m"))
    up, work = os.path.join(upperfs, "up"), os.path.join(upperfs, "work")
    for d in (l1, l2, up, work, mnt):
        os.makedirs(d)
    mount_legacy(mnt, [l1, l2], up, work)
    try:
        assert_ok_quiet_and_verbose(tmp, expect_checks=("layer_missing",))
        shutil.rmtree(l2)
        r = check(tmp)
        assert r.returncode == 2, r
        lines = finding_lines(r.stdout, "CRITICAL", "layer_missing")
        assert len(lines) == 1 and f"mount {mnt}" in lines[0] and l2 in lines[0] and "no longer exists" in lines[0], r.stdout
        v = check(tmp, "--verbose")
        assert v.returncode == 2 and len(v.stdout.splitlines()) > len(r.stdout.splitlines())
        n = check(tmp, "--format", "nagios")
        assert n.returncode == 2
        head = n.stdout.splitlines()[0]
        assert head.startswith("OVLINSPECT CRITICAL - layer_missing") and " | " in head and "'missing_layers'=1;;0;0;" in head
        p = check(tmp, "--format", "prometheus")
        assert p.returncode == 2
        assert f'ovlinspect_finding_status{{check="layer_missing",mount="{mnt}"}} 2' in p.stdout.splitlines()
        assert 'ovlinspect_check_status{check="layer_missing"} 2' in p.stdout.splitlines()
        assert "ovlinspect_overlay_missing_layers 1" in p.stdout.splitlines()
    finally:
        umount(mnt)


def test_layer_count_and_option_length(tmp: str) -> None:
    """120 real lower layers (relative paths, as Docker mounts long chains): WARNING lower_layers
    at the default threshold (115, 90% of Docker's 128); option length by threshold."""
    base = os.path.join(tmp, "L")
    os.makedirs(base)
    names = [str(i) for i in range(120)]
    for n in names:
        os.mkdir(os.path.join(base, n))
    mnt = os.path.join(base, "m")
    os.mkdir(mnt)
    old = os.getcwd()
    os.chdir(base)
    try:
        mount_legacy(mnt, names)
    finally:
        os.chdir(old)
    try:
        r = check(tmp)
        assert r.returncode == 1, r
        lines = finding_lines(r.stdout, "WARNING", "lower_layers")
        assert len(lines) == 1 and "120 lower layers" in lines[0], r.stdout
        assert "layer_missing" not in r.stdout  # relative paths resolved against the mount's parent
        code, doc = check_json(tmp)
        assert metric(doc, "lower_layers", "ovlinspect_overlay_lower_layers_max") == 120
        optlen = metric(doc, "mount_options_length", "ovlinspect_overlay_options_bytes_max")
        line = next(ln for ln in open("/proc/self/mountinfo") if f" {mnt} " in ln)
        assert optlen == len(line.split(" - ", 1)[1].split(" ", 2)[2].rstrip("\n").encode())
        pct = 100 * optlen / os.sysconf("SC_PAGE_SIZE")
        w = check(tmp, "--disable", "lower_layers", "--set", f"mount_options_length.warning_percent={pct / 2:.1f}")
        assert w.returncode == 1 and finding_lines(w.stdout, "WARNING", "mount_options_length"), w
        c = check(tmp, "--disable", "lower_layers", "--set", "mount_options_length.warning_percent=1",
                  "--set", f"mount_options_length.critical_percent={pct / 2:.1f}")
        assert c.returncode == 2 and finding_lines(c.stdout, "CRITICAL", "mount_options_length"), c
        assert_ok_quiet_and_verbose(tmp, "--set", "lower_layers.warning_layers=121", "--set", "lower_layers.critical_layers=200")
    finally:
        umount(mnt)


def _docker_layer(root: str, lid: str) -> tuple[str, str, str]:
    layer = os.path.join(root, "overlay2", lid)
    diff, work, merged = (os.path.join(layer, n) for n in ("diff", "work", "merged"))
    for d in (diff, work, merged):
        os.makedirs(d)
    return diff, work, merged


def test_volatile_leftover_and_stale_merged(tmp: str, upperfs: str) -> None:
    """A Docker-style layer mounted `volatile`: OK while mounted; after the unmount the kernel's
    incompat/volatile marker stays (and blocks the next mount) and merged/ is left: two WARNINGs."""
    root = os.path.join(upperfs, "docker")
    low = os.path.join(tmp, "low")
    os.makedirs(low)
    diff, work, merged = _docker_layer(root, "a" * 64)
    mount_legacy(merged, [low], diff, work, extra="volatile")
    marker = os.path.join(work, "work", "incompat", "volatile")
    args = ("--data-root", root)
    try:
        assert os.path.isdir(marker)  # made by the kernel
        assert_ok_quiet_and_verbose(tmp, *args, expect_checks=("volatile_marker", "stale_merged"))
    finally:
        umount(merged)
    with pytest.raises(OSError):  # the kernel refuses to reuse a volatile upper: the marker matters
        mount_legacy(merged, [low], diff, work)
    r = check(tmp, *args)
    assert r.returncode == 1, r
    vol = finding_lines(r.stdout, "WARNING", "volatile_marker")
    stale = finding_lines(r.stdout, "WARNING", "stale_merged")
    assert len(vol) == 1 and marker in vol[0], r.stdout
    assert len(stale) == 1 and merged in stale[0], r.stdout
    assert len(r.stdout.splitlines()) == 3  # two findings and the summary line
    v = check(tmp, *args, "--verbose")
    assert v.returncode == 1 and any(ln.startswith("WARNING  volatile_marker: 1 left-over") for ln in v.stdout.splitlines()), v.stdout
    code, doc = check_json(tmp, *args)
    assert metric(doc, "stale_merged", "ovlinspect_stale_merged_dirs", runtime="docker") == 1
    assert metric(doc, "volatile_marker", "ovlinspect_volatile_markers_leftover", runtime="docker") == 1
    # the cleanup the remedy describes makes both go away
    shutil.rmtree(os.path.join(work, "work"))
    os.rmdir(merged)
    assert_ok_quiet_and_verbose(tmp, *args)


def test_overlapping_run_is_refused(tmp: str) -> None:
    """The lock: while another run holds it, `check` exits 3 at once with a clear line."""
    lock = os.path.join(tmp, "check.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"4242\n")
        r = check(tmp)
        assert r.returncode == 3 and r.stdout == "", r
        assert r.stderr.startswith("error: another `ovlinspect check` is still running (pid 4242)"), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    finally:
        os.close(fd)
    assert check(tmp).returncode == 0


@pytest.mark.skipif(shutil.which("fuse-overlayfs") is None, reason="fuse-overlayfs not installed (scripts/test-packages.txt)")
def test_hung_filesystem_is_unknown_not_a_hang(tmp: str) -> None:
    """A FUSE filesystem whose daemon is stopped blocks statvfs forever: the check must finish,
    report the filesystem UNKNOWN (exit 3) and name the deadline."""
    lo, up, wk, mnt = (os.path.join(tmp, n) for n in ("fl", "fu", "fw", "fm"))
    for d in (lo, up, wk, mnt):
        os.makedirs(d)
    daemon = subprocess.Popen(["fuse-overlayfs", "-f", "-o", f"lowerdir={lo},upperdir={up},workdir={wk}", mnt],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if any(f" {mnt} " in ln for ln in open("/proc/self/mountinfo")):
                break
            time.sleep(0.05)
        else:
            pytest.fail("fuse-overlayfs did not mount")
        os.kill(daemon.pid, signal.SIGSTOP)
        r = run_check(tmp, *base_args(tmp, "--path", mnt, "--timeout", "2", "--only", "fs_free_space", "--only", "fs_free_inodes"),
                      timeout=120)
        assert r.returncode == 3, r
        lines = finding_lines(r.stdout, "UNKNOWN", "fs_free_space")
        assert len(lines) == 1 and mnt in lines[0] and "no answer within 2s" in lines[0], r.stdout
        assert r.stdout.splitlines()[-1].startswith("ovlinspect check: UNKNOWN (2 unknown")
        v = run_check(tmp, *base_args(tmp, "--path", mnt, "--timeout", "1", "--verbose"), timeout=120)
        assert v.returncode == 3, v  # every other check still ran and is OK
        assert any(ln.startswith("OK") and " layer_missing:" in ln for ln in v.stdout.splitlines()), v.stdout
        assert any(ln.startswith("UNKNOWN  backing_dtype:") for ln in v.stdout.splitlines()), v.stdout
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
        subprocess.run(["fusermount", "-u", mnt], capture_output=True)
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            subprocess.run(["umount", "-l", mnt], capture_output=True)


def test_merged_mounted_only_in_another_namespace_is_not_stale(tmp: str, upperfs: str) -> None:
    """A daemon in its own mount namespace (dockerd with MountFlags=slave) holds the container's
    mount where this namespace cannot see it: the merged/ dir is in use, not stale. Once that
    namespace is gone, it is stale."""
    root = os.path.join(upperfs, "docker")
    low = os.path.join(tmp, "low")
    os.makedirs(low)
    diff, work, merged = _docker_layer(root, "c" * 64)
    holder = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f'mount -t overlay overlay -o "lowerdir={low},upperdir={diff},workdir={work}" "{merged}" && echo up && exec sleep 300'],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
        assert not any(f" {merged} " in ln for ln in open("/proc/self/mountinfo"))  # invisible here
        assert any(f" {merged} " in ln for ln in open(f"/proc/{holder.pid}/mountinfo"))
        assert_ok_quiet_and_verbose(tmp, "--data-root", root, expect_checks=("stale_merged",))
    finally:
        holder.kill()
        holder.wait()
    r = check(tmp, "--data-root", root)
    assert r.returncode == 1, r
    stale = finding_lines(r.stdout, "WARNING", "stale_merged")
    assert len(stale) == 1 and merged in stale[0], r.stdout
