"""CLI tier: typer's CliRunner — exit codes, --json parses, errors are one line, help for every command."""

from __future__ import annotations

import json
import os
import re

import pytest
from typer.testing import CliRunner

from ovlinspect import __version__
from ovlinspect.cli import app

runner = CliRunner()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_version() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"ovlinspect {__version__}"


def test_every_command_has_help_and_is_in_readme() -> None:
    import typer.main

    group = typer.main.get_command(app)
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    names = group.list_commands(None)  # type: ignore[arg-type]
    assert names == ["ls", "du", "btrfs", "check", "orphans", "why-missing", "tree", "diff", "whiteouts"]
    for name in names:
        cmd = group.get_command(None, name)  # type: ignore[arg-type]  # built lazily (cli.LazyGroup)
        assert cmd is not None and cmd.name == name
        assert (cmd.help or "").strip(), f"{name} has no help"
        res = runner.invoke(app, [name, "--help"])
        assert res.exit_code == 0, res.output
        assert f"ovlinspect {name}" in readme, f"README.md does not document `ovlinspect {name}`"


def test_ls_replay_sample(samples: str) -> None:
    res = runner.invoke(app, ["ls", "--json", "--mountinfo", os.path.join(samples, "mountinfo-all-runtimes-at-once.txt")])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema_version"] == 1
    mps = [m["mountpoint"] for m in doc["mounts"]]
    assert any(mp.startswith("/var/lib/docker/overlay2/") for mp in mps)
    assert any(mp.startswith("/var/lib/containers/storage/overlay/") for mp in mps)
    assert any(mp.startswith("/run/containerd/") for mp in mps)
    for m in doc["mounts"]:
        assert set(m) >= {"mount_id", "mountpoint", "upperdir", "workdir", "lowerdirs", "datadirs", "options", "effective"}
        # replayed: layer dirs are not checked on this host
        assert all(la["exists"] is None for la in m["layers"])
        assert m["flags"] == []


def test_ls_replay_text_table(samples: str) -> None:
    res = runner.invoke(app, ["ls", "-l", "--mountinfo", os.path.join(samples, "mountinfo-all-runtimes-at-once.txt")])
    assert res.exit_code == 0
    assert "MOUNTPOINT" in res.stdout and "RESOLVED" in res.stdout and "effective:" in res.stdout


def test_malformed_lines_reported_rest_listed(tmp_path) -> None:
    f = tmp_path / "mi"
    f.write_bytes(
        b"garbage line\n"
        b"5 1 0:2 / /ok rw - overlay overlay rw,lowerdir=/a:/b\n"
        b"6 1 0:3 / /bad rw - overlay overlay rw,lowerdir=/a:::/b\n"
    )
    res = runner.invoke(app, ["ls", "--json", "--mountinfo", str(f)])
    assert res.exit_code == 3
    doc = json.loads(res.stdout)
    assert [m["mountpoint"] for m in doc["mounts"]] == ["/ok"]
    msgs = [p["message"] for p in doc["problems"]]
    assert any("line 1" in m for m in msgs) and any("line 3" in m and "field 11" in m for m in msgs)
    res = runner.invoke(app, ["ls", "--mountinfo", str(f)])
    assert res.exit_code == 3 and "/ok" in res.stdout


def test_missing_mountinfo_file_is_one_line_error(tmp_path) -> None:
    res = runner.invoke(app, ["ls", "--mountinfo", str(tmp_path / "nope")])
    assert res.exit_code == 4
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")


def test_hostile_names_escaped_in_text_and_lossless_in_json(tmp_path) -> None:
    evil = "/x/\x1b]8;;http://evil\x07[bold red]boom[/]\u202e\r\n\udcff"
    esc = os.fsencode(evil).replace(b"\\", b"\\134").replace(b" ", b"\\040").replace(b"\n", b"\\012")
    f = tmp_path / "mi"
    esc_lower = esc.replace(b":", b"\\134:")  # the user's \: escape, printed as the kernel does
    f.write_bytes(b"5 1 0:2 / " + esc + b" rw - overlay overlay rw,lowerdir=/a:" + esc_lower + b"\n")
    res = runner.invoke(app, ["ls", "-l", "--mountinfo", str(f)])
    assert res.exit_code == 0
    out = res.stdout
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out and "\u202e" not in out
    assert "[bold red]boom[/]" in out  # shown literally, not interpreted as markup
    assert "\\e]8;;http://evil\\x07" in out and "\\u202e" in out and "\\xff" in out
    doc = json.loads(runner.invoke(app, ["ls", "--json", "--mountinfo", str(f)]).stdout)
    m = doc["mounts"][0]
    import base64

    assert os.fsdecode(base64.b64decode(m["mountpoint_b64"])) == evil
    assert os.fsdecode(base64.b64decode(m["lowerdirs_b64"][1])) == evil
    assert m["lowerdirs_b64"][0] is None and m["lowerdirs"][0] == "/a"


def test_usage_error_exit_code() -> None:
    res = runner.invoke(app, ["ls", "--no-such-flag"])
    assert res.exit_code == 2


@pytest.mark.parametrize("cmd", [["ls"]])
def test_broken_pipe_is_quiet(cmd: list[str], samples: str) -> None:
    import subprocess
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "ovlinspect")
    p = subprocess.Popen(
        f"{exe} {' '.join(cmd)} -l --mountinfo {samples}/mountinfo-all-runtimes-at-once.txt | head -c 10",
        shell=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = p.communicate(timeout=60)
    assert len(out) == 10
    assert b"Traceback" not in err and not re.search(rb"Exception|Error", err), err


def test_fuse_overlayfs_and_fd_paths_flagged(tmp_path) -> None:
    f = tmp_path / "mi"
    f.write_bytes(
        b"80 1 0:60 / /home/u/.local/share/containers/storage/overlay/abc/merged rw,nodev - fuse.fuse-overlayfs fuse-overlayfs rw,user_id=1000\n"
        b"81 1 0:61 / /run/podman/m rw - overlay overlay rw,lowerdir=/proc/self/fd/12:/proc/self/fd/13,upperdir=/proc/self/fd/14,workdir=/proc/self/fd/15\n"
    )
    doc = json.loads(runner.invoke(app, ["ls", "--json", "--mountinfo", str(f), "--check-paths"]).stdout)
    fuse, fds = doc["mounts"]
    assert fuse["fstype"] == "fuse.fuse-overlayfs" and fuse["lowerdirs"] == [] and fuse["state"] == ["fuse"]
    assert [x["id"] for x in fuse["flags"]] == ["fuse_overlayfs"] and "not shown in mountinfo" in fuse["flags"][0]["message"]
    assert {x["id"] for x in fds["flags"]} == {"layer_unresolved"}
    assert all(not la["resolved"] and "file descriptor" in la["resolution"] for la in fds["layers"])


def _big_mountinfo(path: str, n: int = 2000) -> None:
    lower = ":".join(f"/var/lib/x/l/L{j:02d}" for j in range(20))
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(f"{100 + i} 1 0:{50 + i} / /m/{i} rw - overlay overlay rw,lowerdir={lower},upperdir=/u/{i},workdir=/w/{i}\n")


def test_console_script_json_whole_and_to_a_closed_pipe(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The installed console script (cli.main: its own exit path) writes all of a multi-megabyte
    document, and a reader that leaves early gets exit 141 and silence, not a truncated 0."""
    import subprocess
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "ovlinspect")
    mi = str(tmp_path / "mountinfo")
    _big_mountinfo(mi)
    whole = subprocess.run([exe, "ls", "--json", "--mountinfo", mi], capture_output=True)
    assert whole.returncode == 0, whole.stderr
    assert len(whole.stdout) > 1 << 20 and len(json.loads(whole.stdout)["mounts"]) == 2000
    p = subprocess.Popen([exe, "ls", "--json", "--mountinfo", mi], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    assert p.stdout.read(10) == b'{"schema_v'
    p.stdout.close()
    assert p.wait(timeout=60) == 141
    assert p.stderr.read() == b""


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--version"], 6),
        (["ls", "--help"], 6),
        (["ls"], 6),
        (["ls", "--json"], 6),
        (["check", "--format", "nagios"], 3),  # every error of check itself is UNKNOWN
        (["check", "--format", "json"], 3),
    ],
)
def test_full_disk_under_the_output_is_one_line_and_a_code(samples: str, tmp_path, args: list[str], code: int) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "ovlinspect")
    extra = []
    if args[0] in ("ls", "check") and "--help" not in args:
        extra = ["--mountinfo", os.path.join(samples, "mountinfo-all-runtimes-at-once.txt")]
    if args[0] == "check":
        extra += ["--lock", str(tmp_path / "lock")]
    with open("/dev/full", "w") as full:
        p = subprocess.run([exe, *args, *extra], stdout=full, stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == code, p.stderr
    assert p.stderr.decode().splitlines() == ["error: cannot write the output: [Errno 28] No space left on device"]
