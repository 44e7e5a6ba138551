"""`ovlinspect du` through the real CLI: --json round-trips (non-UTF-8 names too), hostile names
are escaped, usage errors are one line, Ctrl-C exits 130 with one line (no traceback from the
worker processes)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from ovlinspect.render.jsonout import dumps

CMD = [sys.executable, "-m", "ovlinspect", "du"]


def gnu_du(*args: str) -> int:
    return int(subprocess.run(["du", *args], check=True, capture_output=True, text=True).stdout.split()[0])


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, *args], capture_output=True, **kw)


def make_stack(tmp_path: Path) -> tuple[Path, Path, Path, bytes]:
    up, lo1, lo2 = tmp_path / "up", tmp_path / "lo1", tmp_path / "lo2"
    for d in (up, lo1, lo2):
        d.mkdir()
    bad = b"big-\xff\xfe-\x1b[31m[bold]x"  # not UTF-8, an escape sequence and rich markup
    with open(os.path.join(os.fsencode(up), bad), "wb") as f:
        f.write(b"b" * 70000)
    (up / "small").write_bytes(b"s" * 10)
    (lo1 / "f").write_bytes(b"1" * 5000)
    (lo2 / "f").write_bytes(b"2" * 3000)
    (lo2 / "dir").mkdir()
    os.symlink("/etc", lo2 / "dir" / "etc")
    return up, lo1, lo2, bad


def test_json_round_trips_and_equals_gnu_du(tmp_path: Path) -> None:
    up, lo1, lo2, bad = make_stack(tmp_path)
    r = run("--per-layer", "--json", "--top", "2", "--lowerdir", f"{lo1}:{lo2}", "--upperdir", str(up))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema_version"] == 1
    assert set(doc) == {"schema_version", "layers", "targets", "totals", "problems"}
    assert [la["path"] for la in doc["layers"]] == [str(up), str(lo1), str(lo2)]
    assert [(la["role"], la["index"]) for la in doc["layers"]] == [("upper", 0), ("lower", 1), ("lower", 2)]
    for la in doc["layers"]:
        assert la["apparent_bytes"] == gnu_du("-sb", la["path"])
        assert la["allocated_bytes"] == gnu_du("-s", "-B1", la["path"])
        assert la["inodes"] == gnu_du("-s", "--inodes", la["path"])
        for k in ("files", "dirs", "symlinks", "whiteouts", "opaque_dirs", "shared_by"):
            assert isinstance(la[k], int)
    top = doc["layers"][0]["top"]
    assert base64.b64decode(top[0]["path_b64"]) == bad  # lossless for non-UTF-8 names
    assert top[0]["apparent_bytes"] == 70000 and top[1]["path"] == "small"
    # the hidden bytes of this stack: lo1/f hides lo2/f
    assert doc["layers"][2]["shadow"]["hidden_apparent_bytes"] == 3000
    assert doc["layers"][1]["shadow"]["copy_up_files"] == 1
    # a round trip through the serialiser gives the same document
    again = json.loads(dumps({k: v for k, v in doc.items() if k != "schema_version"}))
    assert again == doc
    assert doc["totals"]["apparent_bytes"] == sum(la["apparent_bytes"] for la in doc["layers"])
    assert doc["targets"][0]["unique_allocated_bytes"] == doc["totals"]["allocated_bytes"]


def test_text_output_escapes_hostile_names(tmp_path: Path) -> None:
    up, lo1, lo2, _bad = make_stack(tmp_path)
    r = run("--per-layer", "--top", "1", "--lowerdir", f"{lo1}:{lo2}", "--upperdir", str(up))
    assert r.returncode == 0, r.stderr
    assert b"\x1b" not in r.stdout
    assert b"big-\\xff\\xfe-\\e[31m[bold]x" in r.stdout  # shown escaped, markup not interpreted


def test_plain_total_per_target(tmp_path: Path) -> None:
    up, lo1, lo2, _ = make_stack(tmp_path)
    r = run("-b", "--lowerdir", f"{lo1}:{lo2}", "--upperdir", str(up), text=True)
    assert r.returncode == 0, r.stderr
    total = sum(gnu_du("-s", "-B1", str(d)) for d in (up, lo1, lo2))
    line = next(ln for ln in r.stdout.splitlines() if "--lowerdir stack" in ln)
    assert str(total) in line.split()


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    r = run(text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1
    r = run("--lowerdir", str(tmp_path / "nope"), text=True)
    assert r.returncode == 4 and len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    r = run(str(tmp_path), text=True)  # not an overlay mount
    assert r.returncode == 4 and len(r.stderr.splitlines()) == 1


def test_ctrl_c_exits_130_with_one_line(tmp_path: Path) -> None:
    import shutil
    import tempfile

    # a tree big enough to still be walking when interrupted; tmpfs makes 300k symlinks quickly
    where = Path(tempfile.mkdtemp(dir="/dev/shm")) if os.access("/dev/shm", os.W_OK) else tmp_path
    try:
        _interrupt(where)
    finally:
        if where != tmp_path:
            shutil.rmtree(where, ignore_errors=True)


def _interrupt(tmp_path: Path) -> None:
    layers = []
    for li in range(3):
        base = tmp_path / f"l{li}"
        for d in range(100):
            sub = base / f"d{d}"
            sub.mkdir(parents=True)
            for i in range(1000):
                os.symlink("x", sub / f"s{i}")
        layers.append(str(base))
    p = subprocess.Popen([*CMD, "--per-layer", "--lowerdir", ":".join(layers), "-j", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    proc = psutil.Process(p.pid)
    deadline = time.monotonic() + 30
    while not proc.children() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert p.poll() is None, "the walk finished before it could be interrupted"
    time.sleep(0.02)
    os.killpg(p.pid, signal.SIGINT)  # like a terminal's Ctrl-C: the whole process group
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert err.decode() == "error: interrupted\n"
