"""Bad input and safety on real directories: 10,000-deep trees, vanishing dirs, missing layers,
symlinks inside layers (never followed), and the commands' answers on them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_differential_kernel import make_stack

from ovlinspect.analysis.lookup import LookupContext, explain_path
from ovlinspect.analysis.merged import TreeError, TreeItem, diff_top, walk_merged
from ovlinspect.analysis.whiteouts import Marker, scan_markers
from ovlinspect.layers import LayerReader

DEPTH = 10_000
IS_ROOT = os.geteuid() == 0


def make_deep(root: str, depth: int, leaf: str = "leaf", whiteout_at_bottom: bool = False) -> None:
    """root/d/d/.../d/<leaf> with `depth` dirs, made through dir fds (the path is far beyond PATH_MAX)."""
    os.makedirs(root, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            try:
                os.mkdir("d", dir_fd=fd)
            except FileExistsError:
                pass
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        if whiteout_at_bottom:
            os.mknod(leaf, 0o600 | 0o020000, os.makedev(0, 0), dir_fd=fd)
        else:
            wfd = os.open(leaf, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(wfd, b"bottom\n")
            os.close(wfd)
    finally:
        os.close(fd)


def rm_rf(path: str) -> None:
    """Remove a tree that may be far deeper than PATH_MAX: chains of 'd' are unwound bottom-up by fd."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    depth = 0
    try:
        while True:
            for name in os.listdir(fd):
                if name == "d":
                    continue
                try:
                    os.unlink(name, dir_fd=fd)
                except IsADirectoryError:
                    subprocess.run(["rm", "-rf", f"/proc/self/fd/{fd}/{name}"], check=False)
            try:
                nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError:
                break
            os.close(fd)
            fd = nfd
            depth += 1
        while depth > 0:
            pfd = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = pfd
            depth -= 1
            os.rmdir("d", dir_fd=fd)
    finally:
        os.close(fd)
    subprocess.run(["rm", "-rf", path], check=False)


@pytest.fixture
def deep_stack(tmp_path):
    # as root, on a tmpfs of its own (the session is in a private mount namespace): removing a
    # 10,000-deep tree costs more than building it, a lazy unmount costs nothing
    on_tmpfs = IS_ROOT and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "deep", str(tmp_path)],
                                          capture_output=True).returncode == 0
    low, up = str(tmp_path / "low"), str(tmp_path / "up")
    make_deep(low, DEPTH)
    if not IS_ROOT:
        make_deep(up, DEPTH, leaf="new")
    else:
        make_deep(up, DEPTH, leaf="leaf", whiteout_at_bottom=True)  # deletes the lower leaf
    yield make_stack([low], up)
    if on_tmpfs:
        subprocess.run(["umount", "-l", str(tmp_path)], check=False)
    else:
        rm_rf(str(tmp_path))


@pytest.mark.slow
def test_ten_thousand_deep_tree_why_missing_diff_whiteouts(deep_stack) -> None:
    stack = deep_stack
    deep = "/" + "/".join(["d"] * DEPTH)
    with LayerReader([la.path for la in stack.layers], stack.xattr_prefix) as rd:
        ctx = LookupContext(stack, rd)
        ndirs = nerr = 0
        for it in walk_merged(ctx):  # streamed: holding 10,000 paths of up to 10,000 parts would not be
            if isinstance(it, TreeError):
                nerr += 1
            elif it.entry.kind == "dir":
                ndirs += 1
                assert it.layer == 0 and it.merged_layers == (0, 1)
        assert (ndirs, nerr) == (DEPTH, 0)
        ex = explain_path(stack, rd, deep + "/leaf")
        if IS_ROOT:
            assert ex.verdict == "whiteout" and ex.layer == 0, ex.message
            last = None
            n = 0
            for c in diff_top(ctx):
                assert not isinstance(c, TreeError)
                n += 1
                last = c
            assert n == DEPTH + 1 and last is not None and last.how == "whiteout" and len(last.path) == DEPTH + 1
            marks = [m for m in scan_markers(ctx) if isinstance(m, Marker)]
            assert [m.marker for m in marks] == ["whiteout"] and len(marks[0].path) == DEPTH + 1
        else:
            assert ex.visible and ex.layer == 1
        assert explain_path(stack, rd, deep + "/nope").verdict == "not_found"


def test_symlinks_inside_layers_are_never_followed(tmp_path) -> None:
    low, up = tmp_path / "low", tmp_path / "up"
    low.mkdir()
    up.mkdir()
    secret = tmp_path / "host-secret"
    secret.mkdir()
    (secret / "passwd").write_text("host\n")
    (low / "etc").symlink_to(str(secret))  # a container-controlled link to a host dir
    (up / "x").symlink_to("/etc")
    stack = make_stack([str(low)], str(up))
    with LayerReader([la.path for la in stack.layers]) as rd:
        ctx = LookupContext(stack, rd)
        ex = explain_path(stack, rd, "/etc/passwd")
        # resolved inside the merged root: /host-secret... does not exist in the layers
        assert not ex.visible and ex.verdict == "not_found", ex
        # resolution stops at the first component the layers do not have
        assert ex.resolved == "/tmp" and f"{secret}/passwd exists in no layer" in ex.message, ex
        names = {"/".join(it.path) for it in walk_merged(ctx) if isinstance(it, TreeItem)}
        assert names == {"etc", "x"}  # the symlinked dir is not descended into
        assert rd.dir_fd(1, ("etc",)) is None


def test_layer_dir_vanishing_mid_walk_is_a_problem_not_a_crash(tmp_path) -> None:
    low, up = tmp_path / "low", tmp_path / "up"
    for i in range(30):
        (low / f"d{i:02}").mkdir(parents=True)
        for j in range(5):
            (low / f"d{i:02}" / f"f{j}").write_text("x")
    up.mkdir()
    stack = make_stack([str(low)], str(up))
    seen = 0
    with LayerReader([la.path for la in stack.layers]) as rd:
        ctx = LookupContext(stack, rd)
        for _it in walk_merged(ctx):
            seen += 1
            if seen == 3:
                rm_rf(str(low))  # the whole layer goes away under us
        # the walk finished; the entries read before the removal were reported
        assert seen >= 3


def test_missing_layer_is_a_one_line_error_in_every_command(tmp_path) -> None:
    low = tmp_path / "low"
    low.mkdir()
    gone = tmp_path / "gone"
    for cmd in (["why-missing", "--lowerdir", f"{low}:{gone}", "/x"], ["tree", "--lowerdir", f"{low}:{gone}"],
                ["diff", "--lowerdir", f"{low}:{gone}"], ["whiteouts", "--lowerdir", f"{low}:{gone}"]):
        r = subprocess.run([sys.executable, "-m", "ovlinspect", *cmd], capture_output=True, text=True)
        assert r.returncode == 4, (cmd, r.stderr)
        assert r.stderr.startswith("error: layer directory does not exist") and "Traceback" not in r.stderr


def test_unreadable_subdir_is_reported_per_path() -> None:
    if not IS_ROOT:
        pytest.skip("root reads everything; the test drops privileges itself")
    import pathlib
    import tempfile

    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="ovl-unread-"))
    low, up = tmp_path / "low", tmp_path / "up"
    (low / "closed").mkdir(parents=True)
    (low / "closed" / "inside").write_text("x")
    (low / "open").mkdir()
    (low / "open" / "f").write_text("y")
    up.mkdir()
    os.chmod(low / "closed", 0o000)
    os.chmod(tmp_path, 0o755)
    code = (
        "import json,sys; from ovlinspect.cli import main; sys.argv=['ovlinspect','tree','--json','--lowerdir',"
        f"{str(low)!r}+':'+{str(up)!r}]; main()"
    )
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
                       capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    import json

    doc = json.loads(r.stdout)
    paths = {e["path"] for e in doc["entries"]}
    assert {"/open", "/open/f", "/closed"} <= paths
    assert any(e["path"] == "/closed" and e["verdict"] == "unreadable" and e["problem"]["kind"] == "permission" for e in doc["errors"])
    rm_rf(str(tmp_path))
