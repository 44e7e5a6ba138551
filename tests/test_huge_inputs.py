"""Huge input through the real commands: bounded memory, an answer, no RecursionError, no traceback.

Inputs (issue 8): a 1 MB mountinfo line, 10,000 mounts, 500 lowers (replayed and, as root, a real
overlay mount with 500 lower layers), a 1,000,000-entry directory and a 10,000-deep tree (real
directories, built once per session). Every command runs as a subprocess of the console script
(.venv/bin/ovlinspect) with its stdout in a file; a tiny wrapper process reports the command's
peak RSS from resource.getrusage(RUSAGE_CHILDREN), and the test asserts a generous bound.
That is a resource bound, not a timed assertion.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest

IS_ROOT = os.geteuid() == 0
OVLINSPECT = os.path.join(os.path.dirname(sys.executable), "ovlinspect")
MIB = 1024 * 1024
# Streaming commands (ls, du, why-missing, diff, and tree/whiteouts on deep trees) stay far below this.
RSS_BOUND = 300 * MIB
# tree/whiteouts list a directory's entries once to merge and sort them (analysis/merged.py): a single
# directory of 1,000,000 entries costs ~400 bytes each. Bounded by the largest directory, not the tree.
RSS_BOUND_WIDE_DIR = 768 * MIB
WIDE = 1_000_000
DEEP = 10_000

# RUSAGE_CHILDREN of a wrapper that runs exactly one child: that child's peak RSS (KiB on Linux).
# argv: OUT NOFILE CMD...; NOFILE > 0 lowers the child's soft RLIMIT_NOFILE (a common default is 1024).
_WRAPPER = (
    "import resource, subprocess, sys\n"
    "n = int(sys.argv[2])\n"
    "def lim():\n"
    "    if n > 0:\n"
    "        resource.setrlimit(resource.RLIMIT_NOFILE, (n, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
    "with open(sys.argv[1], 'wb') as out:\n"
    "    rc = subprocess.run(sys.argv[3:], stdout=out, stderr=subprocess.PIPE, preexec_fn=lim)\n"
    "sys.stderr.buffer.write(rc.stderr)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, rc.returncode)\n"
)


@dataclass
class Run:
    rc: int
    stdout_path: str
    stderr: str
    peak_rss: int

    def stdout(self) -> str:
        with open(self.stdout_path, encoding="utf-8", errors="surrogateescape") as fh:
            return fh.read()


def run(args: list[str], out_dir: str, name: str = "out", nofile: int = 1024) -> Run:
    """Run `ovlinspect ARGS` as a child; stdout into a file, stderr captured, peak RSS measured.
    The child runs with at most `nofile` open files: deep trees must not cost an fd per level."""
    out = os.path.join(out_dir, f"{name}.stdout")
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("OVLINSPECT_DEBUG", None)
    p = subprocess.run([sys.executable, "-c", _WRAPPER, out, str(nofile), OVLINSPECT, *args], capture_output=True, text=True, env=env,
                       errors="surrogateescape")
    rss, rc = p.stdout.split()
    r = Run(int(rc), out, p.stderr, int(rss))
    # never a traceback, never an internal error: one `error:` line at most
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr and "RecursionError" not in r.stderr, r.stderr[-2000:]
    assert sum(1 for ln in r.stderr.splitlines() if ln.startswith("error:")) <= 1, r.stderr[-2000:]
    return r


def count_in_file(path: str, needle: bytes, chunk: int = 1 << 22) -> int:
    """Occurrences of `needle` in a big file, read in chunks (the test stays small too)."""
    n, tail = 0, b""
    with open(path, "rb") as fh:
        while True:
            buf = fh.read(chunk)
            if not buf:
                return n
            data = tail + buf
            n += data.count(needle)
            keep = len(needle) - 1
            tail = data[-keep:] if keep else b""
            n -= tail.count(needle) if keep else 0


def json_tail(path: str, size: int = 1 << 16) -> str:
    with open(path, "rb") as fh:
        fh.seek(max(0, os.path.getsize(path) - size))
        return fh.read().decode("utf-8", "surrogateescape")


# --- fixtures: built once per session -----------------------------------------------------------


def _fast_scratch(tmp_path_factory: pytest.TempPathFactory, name: str, inodes: int) -> str:
    """A scratch dir; as root a tmpfs of its own (in the session's private mount namespace), which
    makes a million inodes in seconds instead of minutes and goes away with the session."""
    d = str(tmp_path_factory.mktemp(name))
    if IS_ROOT:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=1g,nr_inodes={inodes + 1000},mode=0755", "huge", d],
                           capture_output=True, text=True)
        if r.returncode != 0:  # fall back to the plain tmp dir
            return d
    return d


@pytest.fixture(scope="session")
def wide_stack(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """lower/big holds 1,000,000 empty files; upper/big holds a new file and (as root) a whiteout."""
    base = _fast_scratch(tmp_path_factory, "wide", WIDE + 100)
    lower, upper = os.path.join(base, "lower"), os.path.join(base, "upper")
    os.makedirs(os.path.join(lower, "big"))
    os.makedirs(os.path.join(upper, "big"))
    fd = os.open(os.path.join(lower, "big"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(WIDE):
            os.mknod(f"f{i:07d}", 0o100644, dir_fd=fd)  # an empty regular file, no open/close
    finally:
        os.close(fd)
    with open(os.path.join(upper, "big", "added"), "w") as fh:
        fh.write("new\n")
    if IS_ROOT:
        os.mknod(os.path.join(upper, "big", "f0000007"), 0o600 | 0o020000, os.makedev(0, 0))  # a whiteout
    yield {"lower": lower, "upper": upper, "out": str(tmp_path_factory.mktemp("wide-out"))}
    if not IS_ROOT or subprocess.run(["umount", "-l", base], capture_output=True).returncode != 0:
        subprocess.run(["rm", "-rf", base], check=False)


def _chain(root: str, depth: int, leaf: str | None, whiteout: str | None = None) -> None:
    """root/d/d/…/d (depth dirs) with a file `leaf` (and a char 0/0 `whiteout`) at the bottom.
    Made through dir fds: the path is far beyond PATH_MAX."""
    os.makedirs(root, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        if leaf:
            wfd = os.open(leaf, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(wfd, b"bottom\n")
            os.close(wfd)
        if whiteout:
            os.mknod(whiteout, 0o600 | 0o020000, os.makedev(0, 0), dir_fd=fd)
    finally:
        os.close(fd)


@pytest.fixture(scope="session")
def deep_stack(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A 10,000-deep chain in both layers: the lower ends in `leaf` and `gone`; the upper adds `new`
    at the bottom and (as root) whites out `gone`."""
    base = _fast_scratch(tmp_path_factory, "deep", 4 * DEEP)
    lower, upper = os.path.join(base, "lower"), os.path.join(base, "upper")
    _chain(lower, DEEP, "leaf")
    fd = os.open(lower, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(DEEP):
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(os.open("gone", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)
    _chain(upper, DEEP, "new", whiteout="gone" if IS_ROOT else None)
    yield {"lower": lower, "upper": upper, "out": str(tmp_path_factory.mktemp("deep-out"))}
    # a tmpfs goes at once; else remove it now (a 10,000-deep tree is slow for pytest's clean-up)
    if not IS_ROOT or subprocess.run(["umount", "-l", base], capture_output=True).returncode != 0:
        subprocess.run(["rm", "-rf", base], check=False)


# --- replayed mountinfo: a 1 MB line, 10,000 mounts, 500 lowers ----------------------------------


@pytest.fixture(scope="session")
def mountinfo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("mountinfo")
    files = {}
    lines = []
    for i in range(10_000):
        cid = f"{i:064x}"
        lowers = ":".join(f"/var/lib/docker/overlay2/l/L{i:05d}X{j}" for j in range(5))
        lines.append(f"{100 + i} 1 0:{50 + i} / /var/lib/docker/overlay2/{cid}/merged rw,relatime shared:{i} - overlay overlay "
                     f"rw,lowerdir={lowers},upperdir=/var/lib/docker/overlay2/{cid}/diff,workdir=/var/lib/docker/overlay2/{cid}/work")
    files["10k"] = str(d / "10k-mounts")
    open(files["10k"], "w").write("\n".join(lines) + "\n")
    big = "/x" * 500_000  # 1 MB of lowerdir, and a 1 MB mount point
    files["1mb"] = str(d / "1mb-line")
    open(files["1mb"], "w").write(
        f"24 1 0:22 / /mnt/a rw - overlay overlay rw,lowerdir={big}:/b,upperdir=/u,workdir=/w\n"
        f"25 1 0:23 / /mnt{big} rw - ext4 /dev/x rw\n"
        f"{'7' * 1_000_000}\n"  # a 1 MB line of garbage: a Problem
        "26 1 0:24 / /ok rw - overlay overlay rw,lowerdir=/a:/b,upperdir=/u,workdir=/w\n"
    )
    files["garbage"] = str(d / "1m-bad-lines")
    with open(files["garbage"], "w") as fh:
        fh.write("".join(f"{i} not a mountinfo line\n" for i in range(1_000_000)))
        fh.write("26 1 0:24 / /ok rw - overlay overlay rw,lowerdir=/a:/b,upperdir=/u,workdir=/w\n")
    lows = ":".join(f"/srv/l/{j}" for j in range(500))
    files["500"] = str(d / "500-lowers")
    open(files["500"], "w").write(
        f"26 1 0:24 / /legacy rw - overlay overlay rw,lowerdir={lows},upperdir=/u,workdir=/w\n"
        "27 1 0:25 / /newapi rw - overlay overlay rw," + ",".join(f"lowerdir+=/srv/l/{j}" for j in range(500)) + ",upperdir=/u,workdir=/w\n"
    )
    return files


@pytest.mark.slow
def test_ls_ten_thousand_mounts(mountinfo_files: dict[str, str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = run(["ls", "--json", "--mountinfo", mountinfo_files["10k"]], str(tmp_path), "json")
    assert r.rc == 0, r.stderr
    doc = json.loads(r.stdout())
    assert len(doc["mounts"]) == 10_000 and not doc["problems"]
    assert doc["mounts"][9999]["lowerdirs"][4] == "/var/lib/docker/overlay2/l/L09999X4"
    assert r.peak_rss < RSS_BOUND, r.peak_rss
    r = run(["ls", "--mountinfo", mountinfo_files["10k"]], str(tmp_path), "text")
    assert r.rc == 0, r.stderr
    assert count_in_file(r.stdout_path, b"/merged") == 10_000
    assert r.peak_rss < RSS_BOUND, r.peak_rss


def test_ls_one_megabyte_lines(mountinfo_files: dict[str, str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = run(["ls", "--json", "--mountinfo", mountinfo_files["1mb"]], str(tmp_path), "json")
    assert r.rc == 3, r.stderr  # listed, but one line was malformed
    doc = json.loads(r.stdout())
    by_mp = {m["mountpoint"]: m for m in doc["mounts"]}
    assert set(by_mp) == {"/mnt/a", "/ok"}
    assert len(by_mp["/mnt/a"]["lowerdirs"]) == 2 and len(by_mp["/mnt/a"]["lowerdirs"][0]) == 1_000_000
    assert [p["kind"] for p in doc["problems"]] == ["malformed"] and doc["problems"][0]["line"] == 3
    assert len(doc["problems"][0]["message"]) < 300  # the bad line is quoted, not copied whole
    assert r.peak_rss < RSS_BOUND
    r = run(["ls", "-l", "--mountinfo", mountinfo_files["1mb"]], str(tmp_path), "text")
    assert r.rc == 3 and "mountinfo line 3" in r.stderr and len(r.stderr) < 2000
    assert r.peak_rss < RSS_BOUND


def test_ls_a_million_malformed_lines(mountinfo_files: dict[str, str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Each bad line used to be kept as a Problem: 1,000,000 of them took 850 MB with --json."""
    r = run(["ls", "--json", "--mountinfo", mountinfo_files["garbage"]], str(tmp_path), "json")
    assert r.rc == 3, r.stderr
    doc = json.loads(r.stdout())
    assert [m["mountpoint"] for m in doc["mounts"]] == ["/ok"]
    assert len(doc["problems"]) == 101 and doc["problems"][-1]["message"].startswith("999900 more malformed")
    assert r.peak_rss < RSS_BOUND, r.peak_rss
    r = run(["ls", "--mountinfo", mountinfo_files["garbage"]], str(tmp_path), "text")
    assert r.rc == 3 and len(r.stderr.splitlines()) <= 21
    assert r.peak_rss < RSS_BOUND, r.peak_rss


def test_ls_five_hundred_lowers(mountinfo_files: dict[str, str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = run(["ls", "--json", "--mountinfo", mountinfo_files["500"]], str(tmp_path), "json")
    assert r.rc == 0, r.stderr
    doc = json.loads(r.stdout())
    assert [len(m["lowerdirs"]) for m in doc["mounts"]] == [500, 500]
    for m in doc["mounts"]:
        assert m["lowerdirs"][0] == "/srv/l/0" and m["lowerdirs"][499] == "/srv/l/499"
        assert "lower_count_near_kernel_limit" in {f["id"] for f in m["flags"]}
    assert r.peak_rss < RSS_BOUND


# --- a 1,000,000-entry directory ------------------------------------------------------------------


@pytest.mark.slow
def test_wide_directory_du_why_missing(wide_stack) -> None:  # type: ignore[no-untyped-def]
    stack = ["--lowerdir", wide_stack["lower"], "--upperdir", wide_stack["upper"]]
    out = wide_stack["out"]
    r = run(["du", "--json", "--per-layer", *stack], out, "du")
    assert r.rc == 0, r.stderr
    doc = json.loads(r.stdout())
    lower = next(la for la in doc["layers"] if la["role"] == "lower")
    assert lower["files"] == WIDE and lower["dirs"] == 2 and lower["complete"]
    assert r.peak_rss < RSS_BOUND, r.peak_rss
    # why-missing touches O(depth x layers) inodes: cheap even here
    r = run(["why-missing", "--json", *stack, "/big/f0999999", "/big/added", "/big/f0000007"], out, "why")
    doc = json.loads(r.stdout())
    verdicts = {x["path"]: x["verdict"] for x in doc["results"]}
    assert verdicts["/big/f0999999"] == "visible" and verdicts["/big/added"] == "visible"
    assert verdicts["/big/f0000007"] == ("whiteout" if IS_ROOT else "visible")
    assert r.rc == (1 if IS_ROOT else 0)
    assert r.peak_rss < RSS_BOUND


@pytest.mark.slow
def test_wide_directory_tree_diff_whiteouts(wide_stack) -> None:  # type: ignore[no-untyped-def]
    stack = ["--lowerdir", wide_stack["lower"], "--upperdir", wide_stack["upper"]]
    out = wide_stack["out"]
    r = run(["tree", "--json", *stack], out, "tree")
    assert r.rc == 0, r.stderr
    visible = WIDE - (1 if IS_ROOT else 0) + 1  # the whited-out file is gone, `added` is new
    assert count_in_file(r.stdout_path, b'"path": "/big/') == visible
    assert json_tail(r.stdout_path).rstrip().endswith('"errors": [], "problems": []}')
    assert r.peak_rss < RSS_BOUND_WIDE_DIR, r.peak_rss
    r = run(["diff", "--json", *stack], out, "diff")
    assert r.rc == 0, r.stderr
    changes = {(c["path"], c["change"]) for c in json.loads(r.stdout())["changes"]}
    want = {("/big", "changed"), ("/big/added", "added")} | ({("/big/f0000007", "deleted")} if IS_ROOT else set())
    assert changes == want
    assert r.peak_rss < RSS_BOUND
    r = run(["whiteouts", "--json", *stack], out, "whiteouts")
    doc = json.loads(r.stdout())
    marks = [(m["path"], m["marker"]) for m in doc["markers"]]
    assert marks == ([("/big/f0000007", "whiteout")] if IS_ROOT else [])
    assert r.peak_rss < RSS_BOUND_WIDE_DIR, r.peak_rss


# --- a 10,000-deep tree ---------------------------------------------------------------------------

DEEP_DIR = "/" + "/".join(["d"] * DEEP)


@pytest.mark.slow
def test_deep_tree_every_command(deep_stack) -> None:  # type: ignore[no-untyped-def]
    stack = ["--lowerdir", deep_stack["lower"], "--upperdir", deep_stack["upper"]]
    out = deep_stack["out"]
    r = run(["tree", "--json", *stack], out, "tree-json")
    assert r.rc == 0, r.stderr
    # DEEP dirs + leaf + new (+ gone when not whited out)
    assert count_in_file(r.stdout_path, b'"path": "/d') == DEEP + 2 + (0 if IS_ROOT else 1)
    assert count_in_file(r.stdout_path, (DEEP_DIR + '/leaf"').encode()) == 1
    assert r.peak_rss < RSS_BOUND, r.peak_rss
    r = run(["tree", *stack], out, "tree-text")
    assert r.rc == 0, r.stderr
    assert count_in_file(r.stdout_path, b"leaf") == 1 and count_in_file(r.stdout_path, b"new") == 1
    assert r.peak_rss < RSS_BOUND, r.peak_rss
    r = run(["diff", "--json", *stack], out, "diff")
    assert r.rc == 0, r.stderr
    changes = json.loads(r.stdout())["changes"]
    assert len(changes) == DEEP + 1 + (1 if IS_ROOT else 0)
    assert {(c["path"], c["change"]) for c in changes if not c["path"].endswith("/d")} == (
        {(DEEP_DIR + "/new", "added")} | ({(DEEP_DIR + "/gone", "deleted")} if IS_ROOT else set()))
    assert r.peak_rss < RSS_BOUND, r.peak_rss
    r = run(["why-missing", "--json", "--brief", *stack, DEEP_DIR + "/leaf", DEEP_DIR + "/gone"], out, "why")
    verdicts = [x["verdict"] for x in json.loads(r.stdout())["results"]]
    assert verdicts == ["visible", "whiteout" if IS_ROOT else "visible"]
    assert r.peak_rss < RSS_BOUND, r.peak_rss
    r = run(["whiteouts", "--json", *stack], out, "whiteouts")
    marks = [(m["path"], m["marker"]) for m in json.loads(r.stdout())["markers"]]
    assert marks == ([(DEEP_DIR + "/gone", "whiteout")] if IS_ROOT else [])
    assert r.peak_rss < RSS_BOUND, r.peak_rss
    r = run(["du", "--json", "--per-layer", *stack], out, "du")
    assert r.rc == 0, r.stderr
    layers = {la["role"]: la for la in json.loads(r.stdout())["layers"]}
    assert layers["upper"]["dirs"] == DEEP + 1 and layers["lower"]["dirs"] == DEEP + 1
    assert layers["lower"]["files"] == 2 and layers["upper"]["files"] == 1
    assert layers["upper"]["whiteouts"] == (1 if IS_ROOT else 0)
    assert layers["upper"]["complete"] and layers["lower"]["complete"]  # was EMFILE at level ~1010
    assert r.peak_rss < RSS_BOUND, r.peak_rss


# --- a real overlay mount with 500 lower layers ---------------------------------------------------


@pytest.mark.kernel
def test_real_mount_with_500_lowers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The kernel's maximum stack (OVL_MAX_STACK 500, fs/overlayfs/params.h), mounted with
    relative lowerdir paths (as runtimes do past a page of options; the option string in
    mountinfo is then ~30 KB), read live by every command."""
    if not IS_ROOT:
        pytest.skip("needs root (a real overlay mount)")
    import ctypes

    from ovl import umount

    base = str(tmp_path)
    n = 500
    for i in range(n):
        d = os.path.join(base, str(i))
        os.makedirs(os.path.join(d, "shared"))
        with open(os.path.join(d, f"f{i}"), "w") as fh:
            fh.write(f"{i}\n")
        with open(os.path.join(d, "shared", "who"), "w") as fh:
            fh.write(f"{i}\n")
    os.makedirs(os.path.join(base, "u"))
    os.makedirs(os.path.join(base, "w"))
    mnt = os.path.join(base, "m")
    os.makedirs(mnt)
    opts = ("lowerdir=" + ":".join(str(i) for i in range(n)) + ",upperdir=u,workdir=w").encode()
    libc = ctypes.CDLL(None, use_errno=True)
    cwd = os.getcwd()
    os.chdir(base)  # relative layer paths resolve against the mounting process's cwd
    try:
        rc = libc.mount(b"overlay", mnt.encode(), b"overlay", ctypes.c_ulong(0), opts)
        if rc != 0:
            pytest.fail(f"mount with {n} lowers: {os.strerror(ctypes.get_errno())}")
    finally:
        os.chdir(cwd)
    try:
        out = str(tmp_path / "out")
        os.makedirs(out)
        kernel_names = sorted(os.listdir(mnt))
        r = run(["ls", "--json", "-l"], out, "ls")
        assert r.rc in (0, 3), r.stderr
        mine = [m for m in json.loads(r.stdout())["mounts"] if m["mountpoint"] == mnt]
        assert len(mine) == 1
        m = mine[0]
        # 6.18 prints the lower dirs it resolved at mount time (absolute), not the relative form given
        assert len(m["lowerdirs"]) == n and m["lowerdirs"][0] in ("0", os.path.join(base, "0"))
        assert [la["path"] for la in m["layers"][1:3]] == [os.path.join(base, "0"), os.path.join(base, "1")]
        assert all(la["exists"] for la in m["layers"])
        assert "lower_count_near_kernel_limit" in {f["id"] for f in m["flags"]}
        assert r.peak_rss < RSS_BOUND
        r = run(["tree", "--json", mnt], out, "tree")
        assert r.rc == 0, r.stderr
        doc = json.loads(r.stdout())
        top = sorted(e["path"][1:] for e in doc["entries"] if e["path"].count("/") == 1)
        assert top == kernel_names  # the offline merged view = what the kernel shows
        who = next(e for e in doc["entries"] if e["path"] == "/shared/who")
        assert who["layer"] == 1 and open(os.path.join(mnt, "shared", "who")).read() == "0\n"
        assert r.peak_rss < RSS_BOUND
        r = run(["why-missing", "--json", mnt, "/f499", "/f500"], out, "why")
        res = {x["path"]: x["verdict"] for x in json.loads(r.stdout())["results"]}
        assert res == {"/f499": "visible", "/f500": "not_found"} and r.rc == 1
        assert os.path.exists(os.path.join(mnt, "f499")) and not os.path.exists(os.path.join(mnt, "f500"))
        r = run(["du", "--json", mnt], out, "du")
        assert r.rc == 0, r.stderr
        assert json.loads(r.stdout())["totals"]["layers"] == n + 1
        assert r.peak_rss < RSS_BOUND
        for cmd in (["diff", mnt], ["whiteouts", mnt]):
            r = run(cmd, out, cmd[0])
            assert r.rc == 0, r.stderr
            assert r.peak_rss < RSS_BOUND
    finally:
        umount(mnt)
        shutil.rmtree(base, ignore_errors=True)
