"""Prometheus for real: node_exporter scrapes the textfile `ovlinspect check --textfile` wrote,
promtool lints it and tests the shipped alert rules, and a concurrent reader never sees a
half-written textfile.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from check_env import REPO, loopfs, parse_exposition, run_check
from ovl import mount_legacy, umount

RULES = os.path.join(REPO, "contrib", "prometheus", "ovlinspect-alerts.yml")
RULE_TESTS = os.path.join(REPO, "contrib", "prometheus", "ovlinspect-alerts.test.yml")
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.prometheus
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian `prometheus`, scripts/test-packages.txt)")
needs_node_exporter = pytest.mark.skipif(NODE_EXPORTER is None, reason="node_exporter not installed (Debian `prometheus-node-exporter`)")

# A mount point whose name needs every label escape: quote, backslash, newline (and a space).
HOSTILE = 'm "q" b\\s\nnl'

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(url: str, deadline_s: float = 20) -> str:
    end = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


@pytest.fixture
def broken_mount(tmp_path, root_required):  # type: ignore[no-untyped-def]
    """A real overlay with a hostile mount point name whose lower layer dir was deleted; its upper
    dir on a loop ext4 of its own, so the filesystem numbers hold still while compared."""
    tmp = str(tmp_path)
    with loopfs(os.path.join(tmp, "fs"), 16, ["mkfs.ext4", "-q", "-F", "-O", "^has_journal"]) as fs:
        l1, l2, up, work, mnt = (os.path.join(tmp, "l1"), os.path.join(tmp, "l2"), os.path.join(fs, "up"),
                                 os.path.join(fs, "work"), os.path.join(tmp, HOSTILE))
        for d in (l1, l2, up, work, mnt):
            os.makedirs(d)
        mount_legacy(mnt, [l1, l2], up, work)
        shutil.rmtree(l2)
        yield tmp, mnt, fs
        umount(mnt)


def _check(tmp: str, *extra: str):  # type: ignore[no-untyped-def]
    return run_check(tmp, "--data-root", os.path.join(tmp, "no-root"), "--lock", os.path.join(tmp, "lock"),
                     "--disable", "orphan_bytes", *extra)


@pytest.mark.kernel
@needs_node_exporter
@needs_promtool
def test_node_exporter_scrapes_the_textfile(broken_mount) -> None:  # type: ignore[no-untyped-def]
    tmp, mnt, upper_fs = broken_mount
    tdir = os.path.join(tmp, "textfiles")
    os.mkdir(tdir)
    prom = os.path.join(tdir, "ovlinspect.prom")
    before = time.time()
    r = _check(tmp, "--textfile", prom)
    # text stays on stdout (cron mails it); the exposition went to the file
    assert r.returncode == 2 and "CRITICAL layer_missing" in r.stdout and r.stderr == "", r
    with open(prom) as fh:
        text = fh.read()
    assert oct(os.stat(prom).st_mode & 0o777) == "0o644"
    assert os.listdir(tdir) == ["ovlinspect.prom"]  # no temp file left behind
    lint = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0 and lint.stdout.strip() == "" and lint.stderr.strip() == "", lint
    port = _free_port()
    ne = subprocess.Popen(
        [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
         "--collector.textfile", f"--collector.textfile.directory={tdir}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        scraped = parse_exposition(_scrape(f"http://127.0.0.1:{port}/metrics"))
    finally:
        ne.terminate()
        ne.wait(10)
    assert scraped[("node_textfile_scrape_error", frozenset())] == 0
    assert scraped[("ovlinspect_check_status", frozenset({("check", "layer_missing")}))] == 2
    assert scraped[("ovlinspect_check_status", frozenset({("check", "lower_layers")}))] == 0
    assert scraped[("ovlinspect_status", frozenset())] == 2
    # the hostile mount point came through every escape intact
    assert scraped[("ovlinspect_finding_status", frozenset({("check", "layer_missing"), ("mount", mnt)}))] == 2
    assert scraped[("ovlinspect_overlay_missing_layers", frozenset())] == 1
    assert scraped[("ovlinspect_overlay_mounts", frozenset())] == 1
    assert scraped[("ovlinspect_overlay_lower_layers_max", frozenset())] == 2
    ts = scraped[("ovlinspect_last_run_timestamp_seconds", frozenset())]
    assert before - 1 <= ts <= time.time()
    assert scraped[("ovlinspect_last_run_duration_seconds", frozenset())] > 0
    # raw numbers: the upper dir's filesystem, as statvfs sees it
    fs_samples = {k: v for k, v in scraped.items() if k[0] == "ovlinspect_filesystem_inodes_free"}
    assert len(fs_samples) == 1
    (name, labels), free = next(iter(fs_samples.items()))
    assert dict(labels) == {"filesystem": upper_fs, "fstype": "ext4", "device": dict(labels)["device"]}
    assert dict(labels)["device"].startswith("/dev/loop")
    st = os.statvfs(upper_fs)
    assert free == st.f_favail and scraped[("ovlinspect_filesystem_inodes", labels)] == st.f_files
    assert scraped[("ovlinspect_filesystem_size_bytes", labels)] == st.f_blocks * st.f_frsize
    assert scraped[("ovlinspect_filesystem_avail_bytes", labels)] == st.f_bavail * st.f_frsize
    assert scraped[("ovlinspect_filesystem_dtype_supported", labels)] == 1


@needs_promtool
def test_shipped_alert_rules() -> None:
    c = subprocess.run([PROMTOOL, "check", "rules", RULES], capture_output=True, text=True)
    assert c.returncode == 0 and "SUCCESS: 6 rules found" in c.stdout, c
    t = subprocess.run([PROMTOOL, "test", "rules", RULE_TESTS], capture_output=True, text=True, cwd=os.path.dirname(RULE_TESTS))
    assert t.returncode == 0 and "SUCCESS" in t.stdout, t.stdout + t.stderr


@needs_promtool
def test_rule_tests_catch_a_wrong_rule(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The promtool tests have teeth: with the CRITICAL rule's threshold changed they fail."""
    with open(RULES) as fh:
        rules = fh.read()
    assert "expr: ovlinspect_check_status == 2" in rules
    shutil.copy(RULE_TESTS, tmp_path / "t.yml")
    (tmp_path / "ovlinspect-alerts.yml").write_text(rules.replace("expr: ovlinspect_check_status == 2", "expr: ovlinspect_check_status >= 1"))
    t = subprocess.run([PROMTOOL, "test", "rules", "t.yml"], capture_output=True, text=True, cwd=tmp_path)
    assert t.returncode != 0 and "OvlinspectCheckCritical" in t.stdout + t.stderr


_READER = r"""
import os, sys, time
path, stop = sys.argv[1], sys.argv[2]
reads = bad = 0
while not os.path.exists(stop):
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        continue
    reads += 1
    lines = data.split(b"\n")
    # complete: ends with a newline, first line is a HELP line, last sample is the duration,
    # one overall status; the big in-process documents: all 3000 samples of one version
    ok = (data.endswith(b"\n") and lines[0].startswith(b"# HELP ") and lines[-2].startswith(b"ovlinspect_last_run_duration_seconds ")
          and data.count(b"\novlinspect_status ") == 1)
    vals = [int(ln.rsplit(b" ", 1)[1]) for ln in lines if ln.startswith(b"ovlinspect_filesystem_inodes_free{")]
    if vals and (len(vals) != 3000 or len({v // 10000 for v in vals}) != 1):
        ok = False
    if not ok:
        bad += 1
        sys.stderr.write(repr(data[-200:]) + "\n")
    for name in os.listdir(os.path.dirname(path)):
        if name.endswith(".prom") and name != os.path.basename(path):
            bad += 1
            sys.stderr.write("temp file visible to the collector: " + name + "\n")
print(reads, bad)
"""


def test_textfile_never_seen_half_written(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A reader process loops over the textfile while it is rewritten, in-process with big
    documents (many fsync'd renames) and by the real CLI: every read is a whole document."""
    from ovlinspect.analysis.checks import CheckReport, CheckResult, Metric, Status
    from ovlinspect.checks_run import write_textfile
    from ovlinspect.render.prometheus import render_prometheus

    tdir = tmp_path / "tf"
    tdir.mkdir()
    prom = str(tdir / "ovlinspect.prom")
    stop = str(tmp_path / "stop")
    reader = subprocess.Popen([sys.executable, "-c", _READER, prom, stop], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for i in range(60):
            metrics = tuple(Metric("ovlinspect_filesystem_inodes_free", i * 10000 + j, (("filesystem", f"/fs/{j}"),)) for j in range(3000))
            rep = CheckReport((CheckResult("fs_free_inodes", "t", True, Status.OK, "", (), metrics),), Status.OK, time.time(), 0.5)
            write_textfile(prom, render_prometheus(rep))
        env = dict(os.environ, PYTHONPATH=REPO)
        for _ in range(5):
            r = subprocess.run([sys.executable, "-m", "ovlinspect", "check", "--only", "lower_layers", "--lock", str(tmp_path / "lock"),
                                "--format", "prometheus", "--textfile", prom], capture_output=True, text=True, env=env)
            assert r.returncode in (0, 1, 2) and r.stdout == "", r
    finally:
        open(stop, "w").close()
        out, err = reader.communicate(timeout=60)
    reads, bad = map(int, out.split())
    assert bad == 0, err
    assert reads > 20, (reads, err)  # the reader really raced the writer
    assert sorted(os.listdir(tdir)) == ["ovlinspect.prom"]
