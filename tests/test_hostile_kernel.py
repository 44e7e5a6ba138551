"""Issue 8 on a real hostile host: every command is read-only, never escapes through symlinks,
never lets a name drive the terminal, and degrades clearly without root.

The host (tests/hostile.py) is a real overlay mount whose layers hold ESC/OSC/BEL/CR/bidi/markup/
invalid-UTF-8 names, symlinks to `/`, `../../..`, a host file and loops, kernel-made whiteouts,
copy-ups and an opaque dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest
from hostile import HOSTILE_NAMES, HostileHost, build_hostile_host
from snapshot import diff_fingerprints, fingerprint

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("root_required")]

EXE = os.path.join(os.path.dirname(sys.executable), "ovlinspect")
# bytes a name may carry that must never reach a terminal raw
FORBIDDEN = [b"\x1b", b"\x07", b"\r", b"\xe2\x80\xae", b"\xff", b"\xfe", b"\x9b"]


@pytest.fixture(scope="module")
def host() -> HostileHost:
    if os.geteuid() != 0:
        pytest.skip("needs root (real overlay mounts)")
    base = tempfile.mkdtemp(prefix="ovl-hostile-")
    os.chmod(base, 0o755)  # the unprivileged tests must be able to traverse it
    return build_hostile_host(base)


def run(argv: list[str], user: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [EXE, *argv]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--inh-caps=-all", *cmd]
    env = {k: v for k, v in os.environ.items() if k != "OVLINSPECT_DEBUG"}
    return subprocess.run(cmd, capture_output=True, timeout=timeout, env=env)


def every_command(h: HostileHost, tmp: str) -> list[list[str]]:
    """One invocation per command and output form, all aimed at the hostile host."""
    m = os.fsdecode(h.merged)
    names = [os.fsdecode(b"data/" + n) for n in HOSTILE_NAMES[:6]]
    paths = ["root-link/etc/passwd", "secret-link", "up-link/host-secret", "loop-a/x", "self", "opq/hidden", "data/rm-me", *names]
    stack = ["--lowerdir", h.lowerdir_option, "--upperdir", os.fsdecode(h.upper)]
    lock = os.path.join(tmp, "check.lock")
    out = []
    for fmt in ([], ["--json"]):
        out += [
            ["ls", "-l", *fmt],
            ["ls", "-A", *fmt],
            ["why-missing", m, *paths, *fmt],
            ["why-missing", *stack, *paths, *fmt],
            ["tree", m, *fmt],
            ["tree", *stack, *fmt],
            ["diff", m, *fmt],
            ["whiteouts", m, *fmt],
            ["du", "--per-layer", "--top", "5", "--compare-content", m, *fmt],
            ["du", *stack, *fmt],
            ["du", "--all", "--per-layer", *fmt],
            ["orphans", "--docker-root", os.fsdecode(h.base), *fmt],
            ["btrfs", os.fsdecode(h.base), *fmt],
        ]
    out += [
        ["check", "--verbose", "--lock", lock, "--path", os.fsdecode(h.upper)],
        ["check", "--format", "json", "--lock", lock, "--path", os.fsdecode(h.upper)],
        ["check", "--format", "nagios", "--lock", lock],
        ["check", "--format", "prometheus", "--lock", lock, "--textfile", os.path.join(tmp, "o.prom")],
    ]
    return out


def test_every_command_is_read_only(host: HostileHost, tmp_path) -> None:
    before = fingerprint(host.base)
    results = []
    for argv in every_command(host, str(tmp_path)):
        r = run(argv)
        results.append((argv[0], r.returncode))
        assert b"Traceback" not in r.stderr, (argv, r.stderr[-2000:])
        assert r.returncode not in (70,), (argv, r.stderr)
    after = fingerprint(host.base)
    assert diff_fingerprints(before, after) == []
    assert len(results) >= 30


def test_text_output_never_carries_control_codes(host: HostileHost, tmp_path) -> None:
    for argv in every_command(host, str(tmp_path)):
        if "--json" in argv or "json" in argv or "prometheus" in argv:
            continue
        r = run(argv)
        for stream in (r.stdout, r.stderr):
            for bad in FORBIDDEN:
                assert bad not in stream, (argv, bad, stream[:3000])
    # the names are there, escaped and with their markup shown literally
    r = run(["tree", os.fsdecode(host.merged)])
    out = r.stdout.decode()
    assert "esc-\\e[31mred\\e[0m" in out
    assert "cr-\\roverwrite" in out and "nl-\\nnewline" in out and "bel-\\x07" in out
    assert "markup-[bold red]boom" in out and "link-[link=http:evil.example]x" in out
    assert "bidi-\\u202eexe.txt" in out and "invalid-utf8-\\xff\\xfe" in out


def test_json_is_valid_and_lossless(host: HostileHost) -> None:
    import base64

    r = run(["tree", os.fsdecode(host.merged), "--json"])
    assert r.returncode in (0, 3), r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema_version"] == 1
    raw = set()
    for e in doc["entries"]:
        raw.add(base64.b64decode(e["path_b64"]) if e.get("path_b64") else os.fsencode(e["path"]))
    for n in HOSTILE_NAMES:
        assert b"data/" + n in raw or (b"/data/" + n) in raw, n


def test_symlinks_never_escape_the_merged_root(host: HostileHost) -> None:
    m = os.fsdecode(host.merged)
    r = run(["why-missing", m, "root-link/etc/passwd", "secret-link", "up-link/host-secret", "up-link/etc/os-release", "--json"])
    assert r.returncode in (0, 1, 3), r.stderr
    res = {x["path"].lstrip("/"): x for x in json.loads(r.stdout)["results"]}
    # `/` restarts at the merged root: /etc/passwd is looked up inside the container, where it does not exist
    assert res["root-link/etc/passwd"]["visible"] is False
    # the link itself is visible (as a symlink, like lstat); its host target is never read
    assert res["secret-link"]["visible"] is True and res["secret-link"]["layer"]["index"] == 1
    # `..` stops at the merged root
    assert res["up-link/host-secret"]["visible"] is False
    assert res["up-link/etc/os-release"]["visible"] is True
    assert res["up-link/etc/os-release"]["layer"]["path"] == os.fsdecode(host.lower2)
    text = json.dumps(json.loads(r.stdout))
    assert "TOP-SECRET" not in text and "root:x:0:0" not in text
    loop = run(["why-missing", m, "loop-a/x", "self/x", "--json"])
    assert loop.returncode in (1, 3), loop.stderr
    for x in json.loads(loop.stdout)["results"]:
        assert x["visible"] is False
    # tree reports the symlinks as symlinks and never descends into them
    t = run(["tree", m, "--json"])
    entries = {e["path"].lstrip("/"): e for e in json.loads(t.stdout)["entries"]}
    assert entries["root-link"]["type"] == "symlink" and entries["root-link"]["target"] == "/"
    assert not any(p.startswith("root-link/") or p.startswith("up-link/") for p in entries)
    assert "host-secret" not in "".join(entries)


def test_du_does_not_follow_symlinks_out_of_layers(host: HostileHost) -> None:
    r = run(["du", "--per-layer", "--json", "--lowerdir", host.lowerdir_option])
    assert r.returncode == 0, r.stderr
    for la in json.loads(r.stdout)["layers"]:
        gnu = int(subprocess.run(["du", "-sb", la["path"]], capture_output=True, check=True).stdout.split()[0])
        assert la["apparent_bytes"] == gnu


def test_symlinked_layer_root_is_not_a_way_out(host: HostileHost, tmp_path) -> None:
    """A layer root that is a symlink out of its runtime home is never read; one that stays
    inside (Docker's l/XXXX -> ../<id>/diff) is followed, as the kernel does."""
    evil = tmp_path / "evil-layer"
    os.symlink("/etc", evil)
    stack = f"{evil}:{os.fsdecode(host.lower2)}"
    t = run(["tree", "--lowerdir", stack, "--json"])
    doc = json.loads(t.stdout)
    assert t.returncode == 3
    paths = {e["path"].lstrip("/") for e in doc["entries"]}
    assert "passwd" not in paths and "hostname" not in paths and "etc/os-release" in paths
    probs = doc["problems"] + [e["problem"] for e in doc["errors"] if e.get("problem")]
    assert any(p["kind"] == "symlink" and p["path"] == str(evil) for p in probs), doc
    w = run(["why-missing", "--lowerdir", stack, "passwd", "--json"])
    (res,) = json.loads(w.stdout)["results"]
    assert res["visible"] is False and b"root:x:0:0" not in w.stdout
    # the runtime's own kind of link is followed
    home = tmp_path / "home"
    (home / "l").mkdir(parents=True)
    (home / "abc" / "diff").mkdir(parents=True)
    (home / "abc" / "diff" / "inside").write_text("x")
    os.symlink("../abc/diff", home / "l" / "SHORTID")
    ok = run(["tree", "--lowerdir", f"{home}/l/SHORTID:{os.fsdecode(host.lower2)}", "--json"])
    assert ok.returncode == 0, ok.stderr
    assert "inside" in {e["path"].lstrip("/") for e in json.loads(ok.stdout)["entries"]}


@pytest.fixture(scope="module")
def nobody_ok() -> str:
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "true"], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"setpriv cannot drop to nobody here: {r.stderr!r}")
    return "nobody"


def test_unprivileged_runs_say_what_they_could_not_see(host: HostileHost, tmp_path, nobody_ok: str) -> None:
    os.chmod(tmp_path, 0o777)
    locked = os.path.join(host.lower2, b"data-locked")
    if not os.path.exists(locked):
        os.makedirs(os.path.join(locked, b"inner"))
        os.chmod(locked, 0o700)
    for argv in every_command(host, str(tmp_path)):
        r = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all", EXE, *argv],
            capture_output=True,
            timeout=120,
        )
        assert b"Traceback" not in r.stderr, (argv, r.stderr[-2000:])
        assert r.returncode != 70, (argv, r.stderr)
        for line in r.stderr.splitlines():
            assert len(line) < 2000
    # trusted.* is invisible to nobody: the opaque dir's effect is unknown, never "visible"
    r = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all", EXE,
         "why-missing", "--lowerdir", host.lowerdir_option, "opq/hidden", "--json"],
        capture_output=True,
    )
    (res,) = json.loads(r.stdout)["results"]
    assert res["verdict"] == "unknown" and res["visible"] is False, res
    assert r.returncode == 3
    # an unreadable directory is named, and the exit code says the answer is incomplete
    r = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all", EXE,
         "du", "--lowerdir", host.lowerdir_option, "--json"],
        capture_output=True,
    )
    doc = json.loads(r.stdout)
    assert r.returncode in (3, 5)
    assert any(p["kind"] == "permission" for p in doc["problems"]), doc["problems"]


def test_broken_pipe_exits_quietly(host: HostileHost) -> None:
    p = subprocess.run(f"{EXE} tree {os.fsdecode(host.merged)!r} | head -n 2", shell=True, capture_output=True)
    assert p.stdout.count(b"\n") == 2
    assert p.stderr == b"", p.stderr


def test_sigint_during_long_du_exits_130(tmp_path) -> None:
    import signal
    import time

    big = tmp_path / "big"
    for i in range(60):
        d = big / f"d{i}"
        d.mkdir(parents=True)
        for j in range(1500):
            (d / f"f{j}").touch()
    p = subprocess.Popen([EXE, "du", "--per-layer", "--lowerdir", f"{big}:{big}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    time.sleep(0.6)
    os.killpg(p.pid, signal.SIGINT)  # like Ctrl-C: the whole foreground process group
    out, err = p.communicate(timeout=60)
    if p.returncode == 0:
        pytest.fail("du finished before the interrupt; make the tree bigger")
    assert p.returncode == 130
    assert b"Traceback" not in err and err.strip().count(b"\n") == 0, err
