"""du on layer dirs made by the kernel: a real overlay, changed through merged/, then unmounted.

Per-layer numbers must equal GNU du to the byte; hidden bytes and copy-ups have known answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ovl import mount_legacy, umount

from ovlinspect import walk
from ovlinspect.model import LayerRole

pytestmark = pytest.mark.kernel


@pytest.fixture(autouse=True)
def _root(root_required: None) -> None:
    pass


def gnu_du(*args: str) -> int:
    return int(subprocess.run(["du", *args], check=True, capture_output=True, text=True).stdout.split()[0])


def alloc(p: Path) -> int:
    return os.lstat(p).st_blocks * 512


def write(p: Path, data: bytes) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def make_lowers(base: Path) -> tuple[Path, Path]:
    l1, l2 = base / "l1", base / "l2"  # l1 above l2
    write(l2 / "a.txt", b"a" * 1000)
    write(l2 / "gone.txt", b"g" * 5000)
    write(l2 / "olddir/f1", b"1" * 3000)
    write(l2 / "olddir/f2", b"2" * 7000)
    write(l2 / "d/x", b"x" * 100)
    write(l2 / "d/y", b"y" * 200)
    write(l2 / "chmodme", os.urandom(8192))
    write(l2 / "keep/deep/k", b"k" * 10)
    with open(l2 / "sparse", "wb") as f:
        f.truncate(20 << 20)
        f.seek(1 << 20)
        f.write(b"s" * 4096)
    os.link(l2 / "a.txt", l2 / "a-link")
    os.symlink("a.txt", l2 / "sym")
    write(l1 / "a.txt", b"A" * 2000)  # shadows l2/a.txt (a copy in a middle layer)
    write(l1 / "mid.txt", b"m" * 50)
    (l1 / "keep").mkdir()
    return l1, l2


def change_through_merged(m: Path) -> None:
    (m / "gone.txt").unlink()  # whiteout
    subprocess.run(["rm", "-rf", str(m / "olddir")], check=True)  # whiteout over a dir
    subprocess.run(["rm", "-rf", str(m / "d")], check=True)
    (m / "d").mkdir()  # opaque dir over l2/d
    (m / "d" / "new").write_bytes(b"n" * 10)
    os.chmod(m / "chmodme", 0o600)  # full copy-up, same content
    with open(m / "sparse", "r+b") as f:  # copy-up of a sparse file stays sparse
        f.seek(2 << 20)
        f.write(b"t" * 10)
    (m / "keep" / "deep" / "k").write_bytes(b"K" * 10)  # copy-up inside merged dirs
    (m / "hl1").write_bytes(b"h" * 9000)
    os.link(m / "hl1", m / "hl2")
    os.symlink("/nonexistent", m / "dangling")
    with open(m / "newsparse", "wb") as f:
        f.truncate(8 << 20)


@pytest.fixture
def kernel_layers(tmp_path: Path) -> dict[str, Path]:
    l1, l2 = make_lowers(tmp_path)
    up, wk, m = tmp_path / "up", tmp_path / "wk", tmp_path / "m"
    for d in (up, wk, m):
        d.mkdir()
    mount_legacy(str(m), [str(l1), str(l2)], str(up), str(wk))
    try:
        change_through_merged(m)
    finally:
        umount(str(m), lazy=False)
    return {"up": up, "l1": l1, "l2": l2, "wk": wk, "m": m, "base": tmp_path}


def test_kernel_made_layers_equal_gnu_du(kernel_layers: dict[str, Path]) -> None:
    up = kernel_layers["up"]
    # the kernel really made whiteouts, an opaque dir and hard links
    assert os.stat(up / "gone.txt", follow_symlinks=False).st_rdev == 0
    assert os.getxattr(up / "d", "trusted.overlay.opaque") == b"y"
    for name in ("up", "l1", "l2"):
        d = str(kernel_layers[name])
        for workers in (1, 2):
            u = walk.walk_layers([walk.WalkJob(0, d)], workers=workers)[0].usage
            assert u.complete, u.problems
            assert u.apparent_bytes == gnu_du("-sb", d), (name, workers)
            assert u.allocated_bytes == gnu_du("-s", "-B1", d), (name, workers)
            assert u.inodes == gnu_du("-s", "--inodes", d), (name, workers)
    u = walk.walk_tree(str(up)).usage
    assert u.whiteouts == 2 and u.opaque_dirs == 1 and u.symlinks == 1


def test_hidden_bytes_and_copy_up_waste(kernel_layers: dict[str, Path]) -> None:
    up, l1, l2 = kernel_layers["up"], kernel_layers["l1"], kernel_layers["l2"]
    shadows, problems = walk.walk_shadows([str(up), str(l1), str(l2)], compare_content=True)
    assert not problems
    s_up, s_l1, s_l2 = shadows
    assert (s_up.hidden_entries, s_up.hidden_apparent_bytes) == (0, 0)
    assert (s_l1.hidden_entries, s_l1.hidden_apparent_bytes) == (0, 0)
    # l2: a.txt (and it is hard-linked: counted once), gone.txt, olddir/, d/, chmodme, sparse, keep/deep/k
    hidden = [l2 / "a.txt", l2 / "gone.txt", l2 / "olddir", l2 / "olddir/f1", l2 / "olddir/f2", l2 / "d", l2 / "d/x", l2 / "d/y",
              l2 / "chmodme", l2 / "sparse", l2 / "keep/deep/k"]
    assert s_l2.hidden_entries == len(hidden)
    assert s_l2.hidden_apparent_bytes == sum(os.lstat(p).st_size for p in hidden)
    assert s_l2.hidden_allocated_bytes == sum(alloc(p) for p in hidden)
    # copy-ups in the upper: chmodme (same content), sparse (changed), keep/deep/k (same size, changed)
    assert s_up.copy_up_files == 3
    assert s_up.copy_up_apparent_bytes == 8192 + (20 << 20) + 10
    assert s_up.copy_up_allocated_bytes == alloc(up / "chmodme") + alloc(up / "sparse") + alloc(up / "keep/deep/k")
    assert s_up.same_size_files == 3 and s_up.metacopy_files == 0
    assert s_up.identical_files == 1 and s_up.identical_allocated_bytes == alloc(up / "chmodme")
    # l1's a.txt over l2's a.txt: a copy with other content and size
    assert (s_l1.copy_up_files, s_l1.copy_up_apparent_bytes, s_l1.same_size_files, s_l1.identical_files) == (1, 2000, 0, 0)


def test_metacopy_copy_up_is_flagged_and_its_data_not_hidden(tmp_path: Path) -> None:
    lo, up, wk, m = (tmp_path / n for n in ("lo", "up", "wk", "m"))
    for d in (lo, up, wk, m):
        d.mkdir()
    write(lo / "big", os.urandom(1 << 20))
    write(lo / "other", b"o" * 100)
    try:
        mount_legacy(str(m), [str(lo)], str(up), str(wk), extra="metacopy=on,redirect_dir=on")
    except OSError as exc:
        pytest.skip(f"kernel refused metacopy=on: {exc}")
    try:
        os.chmod(m / "big", 0o600)
        (m / "other").unlink()
    finally:
        umount(str(m), lazy=False)
    assert os.getxattr(up / "big", "trusted.overlay.metacopy", follow_symlinks=False) is not None
    (s_up, s_lo), problems = walk.walk_shadows([str(up), str(lo)])
    assert not problems
    assert s_up.copy_up_files == 1 and s_up.metacopy_files == 1
    assert s_up.copy_up_allocated_bytes == alloc(up / "big") < 4096 * 2
    assert s_lo.hidden_entries == 1 and s_lo.hidden_apparent_bytes == 100  # only `other`: big's data is in use


def test_shared_and_unique_across_two_mounts(tmp_path: Path) -> None:
    l1, l2 = make_lowers(tmp_path)
    ups = []
    for n in ("a", "b"):
        up, wk, m = tmp_path / f"up{n}", tmp_path / f"wk{n}", tmp_path / f"m{n}"
        for d in (up, wk, m):
            d.mkdir()
        mount_legacy(str(m), [str(l1), str(l2)], str(up), str(wk))
        (m / f"only-{n}").write_bytes(b"z" * (1000 if n == "a" else 30000))
        ups.append(up)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "ovlinspect", "du", "--per-layer", "--json", str(tmp_path / "ma"), str(tmp_path / "mb")],
            capture_output=True, text=True,
        )
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
    finally:
        for n in ("a", "b"):
            umount(str(tmp_path / f"m{n}"), lazy=False)
    paths = [la["path"] for la in doc["layers"]]
    assert paths == [str(ups[0]), str(l1), str(l2), str(ups[1])]
    assert [la["shared_by"] for la in doc["layers"]] == [1, 2, 2, 1]
    assert [la["role"] for la in doc["layers"]] == ["upper", "lower", "lower", "upper"]
    for la in doc["layers"]:
        assert la["apparent_bytes"] == gnu_du("-sb", la["path"])
        assert la["allocated_bytes"] == gnu_du("-s", "-B1", la["path"])
    ta, tb = doc["targets"]
    shared = gnu_du("-s", "-B1", str(l1)) + gnu_du("-s", "-B1", str(l2))
    assert ta["unique_allocated_bytes"] == gnu_du("-s", "-B1", str(ups[0]))
    assert tb["unique_allocated_bytes"] == gnu_du("-s", "-B1", str(ups[1]))
    assert ta["shared_allocated_bytes"] == tb["shared_allocated_bytes"] == shared
    t = doc["totals"]
    assert t["layers"] == 4 and t["shared_allocated_bytes"] == shared
    out = subprocess.run(["du", "-s", "-B1", "-c", str(ups[0]), str(l1), str(l2), str(ups[1])], capture_output=True, text=True, check=True)
    assert t["allocated_bytes"] == int(out.stdout.splitlines()[-1].split()[0])  # the "total" line
    assert t["unique_allocated_bytes"] + t["shared_allocated_bytes"] == t["allocated_bytes"]


def test_all_dedupes_layers_shared_between_mounts_and_skips_mount_points(tmp_path: Path) -> None:
    l1, l2 = make_lowers(tmp_path)
    # a mount inside a layer dir (same device: a bind mount) must not be walked into
    (l2 / "bound").mkdir()
    subprocess.run(["mount", "--bind", str(l1), str(l2 / "bound")], check=True)
    mounts = []
    try:
        for n in ("a", "b"):
            up, wk, m = tmp_path / f"up{n}", tmp_path / f"wk{n}", tmp_path / f"m{n}"
            for d in (up, wk, m):
                d.mkdir()
            mount_legacy(str(m), [str(l1), str(l2)], str(up), str(wk))
            mounts.append(m)
        rep = walk.collect_usage(
            [walk.stack_input(s) for s in _stacks_of(mounts)],
            mountpoints=walk.mount_points(Path("/proc/self/mountinfo").read_bytes()),
        )
    finally:
        for m in mounts:
            umount(str(m), lazy=False)
        umount(str(l2 / "bound"), lazy=False)
    by_path = {r.path: r for r in rep.layers}
    assert by_path[str(l2)].shared_by == 2 and by_path[str(l1)].shared_by == 2
    assert by_path[str(l2)].usage.skipped_mounts == 1
    # unmounted again, du sees the empty mount-point dir that the walk skipped along with the mount
    assert by_path[str(l2)].usage.apparent_bytes == gnu_du("-sb", str(l2)) - os.lstat(l2 / "bound").st_size
    assert len(rep.layers) == 4


def _stacks_of(mounts: list[Path]) -> list:
    from ovlinspect.hostfs import HostRoots
    from ovlinspect.targets import resolve_target

    return [resolve_target(str(m), HostRoots()) for m in mounts]


def test_cli_per_layer_text_and_lowerdir_stack(kernel_layers: dict[str, Path]) -> None:
    up, l1, l2 = (str(kernel_layers[n]) for n in ("up", "l1", "l2"))
    r = subprocess.run(
        [sys.executable, "-m", "ovlinspect", "du", "--per-layer", "-b", "--lowerdir", f"{l1}:{l2}", "--upperdir", up],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    row = next(ln for ln in lines if ln.rstrip().endswith(up))
    assert str(gnu_du("-sb", up)) in row.split() and str(gnu_du("-s", "-B1", up)) in row.split()
    assert any("hidden by higher layers" in ln for ln in lines)


def test_relpath_roles(kernel_layers: dict[str, Path]) -> None:
    from ovlinspect.targets import stack_from_options

    st = stack_from_options(f"{kernel_layers['l1']}:{kernel_layers['l2']}", str(kernel_layers["up"]))
    si = walk.stack_input(st, shadows=True)
    assert [r for _, r, _ in si.layers] == [LayerRole.UPPER, LayerRole.LOWER, LayerRole.LOWER]


def test_a_path_under_the_merged_view_measures_that_subtree_in_each_layer(tmp_path: Path) -> None:
    l1, l2 = make_lowers(tmp_path)
    up, wk, m = tmp_path / "up", tmp_path / "wk", tmp_path / "m"
    for d in (up, wk, m):
        d.mkdir()
    (l2 / "olddir" / "f1").unlink()
    os.symlink("/etc", l1 / "olddir")  # a symlink in a layer where the subpath is: never followed
    mount_legacy(str(m), [str(l1), str(l2)], str(up), str(wk))
    try:
        (m / "keep" / "extra").write_bytes(b"e" * 777)
        r = subprocess.run([sys.executable, "-m", "ovlinspect", "du", "--per-layer", "--json", str(m / "keep")], capture_output=True, text=True)
        r2 = subprocess.run([sys.executable, "-m", "ovlinspect", "du", "--json", str(m / "olddir")], capture_output=True, text=True)
    finally:
        umount(str(m), lazy=False)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["targets"][0]["label"].endswith("(subpath /keep)")
    for la, layer in zip(doc["layers"], (up, l1, l2), strict=True):
        assert la["apparent_bytes"] == gnu_du("-sb", str(layer / "keep"))
        assert la["allocated_bytes"] == gnu_du("-s", "-B1", str(layer / "keep"))
    assert r2.returncode == 0, r2.stderr
    doc2 = json.loads(r2.stdout)
    # olddir exists in l2 only (l1 has a symlink there, the upper nothing)
    assert [la["apparent_bytes"] for la in doc2["layers"]] == [0, 0, gnu_du("-sb", str(l2 / "olddir"))]
    assert doc2["totals"]["complete"] is True


def test_cli_all_walks_each_shared_layer_once(tmp_path: Path) -> None:
    l1, l2 = make_lowers(tmp_path)
    mounts = []
    for n in ("a", "b", "c"):
        up, wk, m = tmp_path / f"up{n}", tmp_path / f"wk{n}", tmp_path / f"m{n}"
        for d in (up, wk, m):
            d.mkdir()
        mount_legacy(str(m), [str(l1), str(l2)], str(up), str(wk))
        (m / f"new-{n}").write_bytes(b"n" * 4000)
        mounts.append(m)
    # only this test's mounts: pin the runtimes' data roots to an empty dir
    none = tmp_path / "no-runtime"
    none.mkdir()
    env = dict(os.environ, OVLINSPECT_DOCKER_ROOT=str(none), OVLINSPECT_PODMAN_ROOT=str(none), OVLINSPECT_CONTAINERD_ROOT=str(none))
    try:
        r = subprocess.run([sys.executable, "-m", "ovlinspect", "du", "--per-layer", "--all", "--json"], capture_output=True, text=True, env=env)
    finally:
        for m in mounts:
            umount(str(m), lazy=False)
    assert r.returncode in (0, 3), r.stderr
    doc = json.loads(r.stdout)
    ours = {str(p) for p in (l1, l2, tmp_path / "upa", tmp_path / "upb", tmp_path / "upc")}
    rows = {la["path"]: la for la in doc["layers"] if la["path"] in ours}
    assert set(rows) == ours  # each shared lower dir appears once
    assert rows[str(l1)]["shared_by"] == rows[str(l2)]["shared_by"] == 3
    assert all(rows[str(tmp_path / f"up{n}")]["shared_by"] == 1 for n in "abc")
    assert all(rows[p]["shadow"] is None for p in ours)  # --all: no hidden-bytes walk unless --hidden
    for p, la in rows.items():
        assert la["allocated_bytes"] == gnu_du("-s", "-B1", p)
    mine = [t for t in doc["targets"] if any(str(m) in t["label"] for m in mounts)]
    assert len(mine) == 3
    for t in mine:
        up = next(doc["layers"][k]["path"] for k in t["layers"] if doc["layers"][k]["role"] == "upper")
        assert t["unique_allocated_bytes"] == gnu_du("-s", "-B1", up)
