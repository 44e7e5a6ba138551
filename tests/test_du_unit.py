"""du: pure lookup verdicts and report attribution on literals; the walker on plain directories
cross-checked with GNU du (no root needed)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ovlinspect import walk
from ovlinspect.analysis.usage import DIR, LNK, REG, WHITEOUT, EntryInfo, LayerUse, Target, build_report, merge_dir
from ovlinspect.errors import Problem
from ovlinspect.model import LayerRole, ShadowUsage, TreeUsage


def gnu_du(*args: str) -> int:
    out = subprocess.run(["du", *args], check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


# -- merge_dir: the lookup rules of fs/overlayfs/namei.c on literals ---------------------------


def test_whiteout_hides_everything_below() -> None:
    v = merge_dir([{"x": EntryInfo(WHITEOUT)}, {"x": EntryInfo(REG, 10)}, {"x": EntryInfo(DIR)}])
    assert set(v.hidden) == {(1, "x"), (2, "x")}
    assert v.copy_ups == () and v.descend == ()


def test_file_over_file_is_a_copy_up_and_hides_the_rest() -> None:
    v = merge_dir([{"f": EntryInfo(REG, 5)}, {"f": EntryInfo(REG, 5)}, {"f": EntryInfo(REG, 9)}])
    assert v.copy_ups == ((0, 1, "f"),)
    assert set(v.hidden) == {(1, "f"), (2, "f")}


def test_metacopy_keeps_its_data_source_visible() -> None:
    v = merge_dir([{"f": EntryInfo(REG, 5, metacopy=True)}, {"f": EntryInfo(REG, 5)}, {"f": EntryInfo(REG, 9)}])
    assert v.copy_ups == ((0, 1, "f"),)
    assert v.hidden == ((2, "f"),)


def test_dirs_merge_until_opaque_or_non_dir() -> None:
    v = merge_dir([{"d": EntryInfo(DIR)}, {"d": EntryInfo(DIR, opaque=True)}, {"d": EntryInfo(DIR)}])
    assert v.descend == (("d", (0, 1)),)
    assert v.hidden == ((2, "d"),)
    v = merge_dir([{"d": EntryInfo(DIR)}, {"d": EntryInfo(DIR)}, {"d": EntryInfo(LNK)}, {"d": EntryInfo(DIR)}])
    assert v.descend == (("d", (0, 1)),)
    assert set(v.hidden) == {(2, "d"), (3, "d")}
    v = merge_dir([{"d": EntryInfo(DIR, opaque=True)}, {"d": EntryInfo(DIR)}])
    assert v.descend == () and v.hidden == ((1, "d"),)


def test_names_in_one_layer_need_no_decision() -> None:
    v = merge_dir([{"a": EntryInfo(REG)}, {"b": EntryInfo(DIR)}])
    assert v == merge_dir([{}, {}])


def test_dir_over_file_hides_the_file() -> None:
    v = merge_dir([{"n": EntryInfo(DIR)}, {"n": EntryInfo(REG, 7)}])
    assert v.hidden == ((1, "n"),) and v.descend == ()


# -- build_report: shared / unique attribution ----------------------------------------------


def test_shared_and_unique_attribution() -> None:
    usage = {
        0: TreeUsage(apparent_bytes=100, allocated_bytes=4096, files=1, dirs=1, inodes=2),
        1: TreeUsage(apparent_bytes=200, allocated_bytes=8192, files=2, dirs=1, inodes=3),
        2: TreeUsage(apparent_bytes=1000, allocated_bytes=40960, files=9, dirs=1, inodes=10),
        3: TreeUsage(apparent_bytes=7, allocated_bytes=0, files=0, dirs=1, inodes=1),
    }
    targets = [
        Target("a", (LayerUse(0, LayerRole.UPPER, 0), LayerUse(2, LayerRole.LOWER, 1), LayerUse(3, LayerRole.LOWER, 2))),
        Target("b", (LayerUse(1, LayerRole.UPPER, 0), LayerUse(2, LayerRole.LOWER, 1), LayerUse(3, LayerRole.LOWER, 2))),
    ]
    sh = {0: (0, ShadowUsage(hidden_allocated_bytes=5, copy_up_allocated_bytes=3))}
    r = build_report(["u1", "u2", "l1", "l2"], targets, usage, (0, 0, 0), sh, [Problem("x", "y")])
    assert [row.shared_by for row in r.layers] == [1, 1, 2, 2]
    assert r.layers[2].used_by == (0, 1)
    ta, tb = r.targets
    assert (ta.allocated_bytes, ta.unique_allocated_bytes, ta.shared_allocated_bytes) == (4096 + 40960, 4096, 40960)
    assert (tb.apparent_bytes, tb.unique_apparent_bytes, tb.shared_apparent_bytes) == (1207, 200, 1007)
    t = r.totals
    assert t.layers == 4 and t.counts["allocated_bytes"] == 4096 + 8192 + 40960
    assert t.unique_allocated_bytes == 4096 + 8192 and t.shared_allocated_bytes == 40960
    assert t.hidden_allocated_bytes == 5 and t.copy_up_allocated_bytes == 3
    # a hard link between two layer dirs is counted once in the totals
    r2 = build_report(["u1", "u2", "l1", "l2"], targets, usage, (100, 4096, 1))
    assert r2.totals.counts["allocated_bytes"] == 8192 + 40960 and r2.totals.counts["inodes"] == 15


# -- the walker on real directories (no overlay needed) vs GNU du ----------------------------


def _tree(root: str) -> None:
    os.makedirs(os.path.join(root, "a/b/c/d"))
    with open(os.path.join(root, "a/data"), "wb") as f:
        f.write(os.urandom(12345))
    with open(os.path.join(root, "a/b/sparse"), "wb") as f:
        f.truncate(50 << 20)
        f.seek(10 << 20)
        f.write(b"x" * 5000)
    for i in range(5):
        os.link(os.path.join(root, "a/data"), os.path.join(root, f"a/b/c/link{i}"))
    os.symlink("/etc/passwd", os.path.join(root, "a/abs-link"))
    os.symlink("../../../..", os.path.join(root, "a/b/c/d/up"))
    os.mkfifo(os.path.join(root, "fifo"))
    for i in range(300):
        with open(os.path.join(root, f"a/b/c/d/f{i}"), "w") as f:
            f.write("y" * i)


def test_walker_equals_gnu_du(tmp_path) -> None:
    root = str(tmp_path / "layer")
    _tree(root)
    r = walk.walk_tree(root, top_n=3).usage
    assert r.complete and not r.problems
    assert r.apparent_bytes == gnu_du("-sb", root)
    assert r.allocated_bytes == gnu_du("-s", "-B1", root)
    assert r.inodes == gnu_du("-s", "--inodes", root)
    assert (r.files, r.dirs, r.symlinks, r.other) == (1 + 1 + 5 + 300, 5, 2, 1)
    assert [t.path for t in r.top][:2] == ["a/b/sparse", "a/data"] and len(r.top) == 3
    assert sum(1 for t in r.top if t.apparent_bytes == 12345) == 1  # one name per hard-linked inode
    assert r.top[0].apparent_bytes == 50 << 20 and r.top[0].allocated_bytes < (1 << 20)
    # the same numbers when cut into slices and walked by worker processes
    for workers in (1, 2, 3):
        p = walk.walk_layers([walk.WalkJob(0, root, top_n=3)], workers=workers)[0].usage
        assert (p.apparent_bytes, p.allocated_bytes, p.inodes, p.files, p.dirs, p.symlinks) == (
            r.apparent_bytes, r.allocated_bytes, r.inodes, r.files, r.dirs, r.symlinks,
        )
        assert p.top[0].path == "a/b/sparse"


def test_walker_never_follows_symlinks(tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"z" * 100000)
    layer = tmp_path / "layer"
    layer.mkdir()
    os.symlink(str(outside), layer / "escape")
    r = walk.walk_tree(str(layer)).usage
    assert r.symlinks == 1 and r.files == 0
    assert r.apparent_bytes == gnu_du("-sb", str(layer)) < 100000


def test_cross_layer_hard_links_counted_once_in_totals(tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_bytes(os.urandom(30000))
    os.link(a / "f", b / "f")
    rep = walk.collect_usage([walk.StackInput("s", ((str(a), LayerRole.LOWER, 0), (str(b), LayerRole.LOWER, 1)))], workers=2)
    both = subprocess.run(["du", "-sb", str(a), str(b)], capture_output=True, text=True, check=True).stdout.split()
    assert rep.totals.counts["apparent_bytes"] == int(both[0]) + int(both[2])
    assert rep.layers[1].usage.apparent_bytes == gnu_du("-sb", str(b))  # each layer alone: like du DIR


def test_layer_removed_mid_walk_is_a_problem_not_a_crash(tmp_path, monkeypatch) -> None:
    root = tmp_path / "layer"
    for i in range(20):
        d = root / f"d{i}"
        d.mkdir(parents=True)
        for j in range(20):
            (d / f"f{j}").write_bytes(b"x" * j)
    monkeypatch.setattr(walk, "TICK", 5)
    removed = []

    def tick(n: int) -> None:
        if not removed:
            shutil.rmtree(root)
            removed.append(n)

    res = walk.walk_tree(str(root), tick=tick).usage
    assert removed and not root.exists()
    assert not res.complete
    assert res.problems and {p.kind for p in res.problems} <= {"vanished", "truncated"}
    assert res.files < 400


def test_missing_layer_in_a_report_is_a_problem(tmp_path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    rep = walk.collect_usage(
        [walk.StackInput("s", ((str(good), LayerRole.UPPER, 0), (str(tmp_path / "gone"), LayerRole.LOWER, 1)))]
    )
    assert not rep.totals.complete
    assert any(p.kind == "vanished" and p.path == str(tmp_path / "gone") for p in rep.problems)
    assert rep.layers[0].usage.complete and not rep.layers[1].usage.complete


@pytest.mark.parametrize("workers", [1, 2])
def test_another_device_is_skipped_and_counted(tmp_path, workers) -> None:
    # /proc is another filesystem: a symlink to it is not followed, and a bind-mount is not
    # possible without root, so use the mount-point list the command passes (same-device case)
    root = tmp_path / "layer"
    (root / "merged" / "deep").mkdir(parents=True)
    (root / "merged" / "deep" / "f").write_bytes(b"q" * 5000)
    (root / "keep").write_bytes(b"k" * 10)
    mp = frozenset({"merged"})
    r = walk.walk_layers([walk.WalkJob(0, str(root), mount_relpaths=mp)], workers=workers)[0].usage
    assert r.skipped_mounts == 1 and r.files == 1 and r.dirs == 1
