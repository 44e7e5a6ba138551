"""The fast `ls --json` path gives exactly what the plain one does.

`render.ls.inventory_json` splices each distinct layer's record, encoded once, into every mount
that has it, and `analysis.mounts.AssessMemo` shares layers and effective options between the
mounts of one listing. Neither may change a byte of the answer.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ovl import mount_legacy, umount

from ovlinspect.analysis.mounts import _EFFECTIVE_KEYS, AssessMemo, assess_mount, effective_options
from ovlinspect.hostfs import HostProbe, HostRoots
from ovlinspect.inventory import collect_mounts
from ovlinspect.model import Layer, LayerRole
from ovlinspect.mountinfo import parse_mountinfo
from ovlinspect.render.jsonout import dumps
from ovlinspect.render.ls import inventory_doc, inventory_json, layer_record, layer_record_general


def test_spliced_json_equals_plain_json_for_every_sample(samples: str) -> None:
    files = sorted(glob.glob(os.path.join(samples, "**", "*mountinfo*.txt"), recursive=True))
    assert len(files) >= 5
    for path in files:
        inv = collect_mounts(HostRoots(mountinfo_file=path))
        assert inv.mounts, path
        assert inventory_json(inv) == dumps(inventory_doc(inv)), path


@pytest.mark.kernel
@pytest.mark.usefixtures("root_required")
def test_spliced_json_equals_plain_json_on_real_mounts(tmp_path: Path) -> None:
    # real mounts sharing their lowers (one lower with a non-UTF-8 name), then one lower removed
    lowers = [tmp_path / "L0", tmp_path / os.fsdecode(b"L1-\xff \t,:"), tmp_path / "L2"]
    for d in lowers:
        d.mkdir()
    mps = []
    for i in range(4):
        for kind in ("u", "w", "m"):
            (tmp_path / f"{kind}{i}").mkdir()
        mount_legacy(str(tmp_path / f"m{i}"), [str(d) for d in lowers], str(tmp_path / f"u{i}"), str(tmp_path / f"w{i}"))
        mps.append(str(tmp_path / f"m{i}"))
    try:
        lowers[2].rmdir()  # the kernel keeps it pinned; the listing must flag it on every mount
        inv = collect_mounts(HostRoots())
        ours = [m for m in inv.mounts if m.entry.mountpoint in mps]
        assert len(ours) == 4
        assert all("layer_missing" in {f.id for f in m.flags} for m in ours)
        fast = inventory_json(inv)
        assert fast == dumps(inventory_doc(inv))
        recs = [r for r in json.loads(fast)["mounts"] if r["mountpoint"] in mps]
        assert [[la["exists"] for la in r["layers"]] for r in recs] == [[True, True, True, False]] * 4
    finally:
        for mp in mps:
            umount(mp)


class _MapProbe:
    """exists() from a fixed set of paths; everything else is absent."""

    def __init__(self, present: set[str]) -> None:
        self.present = present

    def exists(self, path: str) -> bool | None:
        return path in self.present

    def realpath(self, path: str) -> str:
        return path

    def page_size(self) -> int:
        return 4096


def _entry(mid: int, mountpoint: str, opts: str):  # type: ignore[no-untyped-def]
    line = f"{mid} 1 0:{mid} / {mountpoint} rw - overlay overlay rw,{opts}\n".encode()
    entries, problems = parse_mountinfo(line)
    assert not problems
    return entries[0]


def test_memo_keeps_relative_layers_apart_per_base() -> None:
    # the same relative lowerdir= string under two runtime homes: one resolves, one does not
    probe = _MapProbe({"/a/l/L1", "/a/l/L2", "/a/u", "/a/w"})
    memo = AssessMemo()
    opts = "lowerdir=l/L1:l/L2,upperdir={h}/u,workdir={h}/w"
    ma = assess_mount(_entry(10, "/a/x/merged", opts.format(h="/a")), probe, {}, memo=memo)
    mb = assess_mount(_entry(11, "/b/x/merged", opts.format(h="/b")), probe, {}, memo=memo)
    assert [la.path for la in ma.lowers] == ["/a/l/L1", "/a/l/L2"]
    assert all(la.exists for la in ma.lowers)
    assert not any(la.exists for la in mb.lowers)
    assert {f.id for f in mb.flags} == {"layer_missing", "layer_unresolved"} and not ma.flags
    # and each answer is the one an unshared assessment gives
    for m, mp, h in ((ma, "/a/x/merged", "/a"), (mb, "/b/x/merged", "/b")):
        alone = assess_mount(_entry(m.entry.mount_id, mp, opts.format(h=h)), probe, {})
        assert alone.layers == m.layers and alone.flags == m.flags and alone.effective == m.effective


def test_memo_shares_absolute_layers_between_mounts() -> None:
    probe = HostProbe(enabled=False)
    memo = AssessMemo()
    opts = "lowerdir=/l/1:/l/2,upperdir=/u{n},workdir=/w{n}"
    m1 = assess_mount(_entry(1, "/m1", opts.format(n=1)), probe, {}, memo=memo)
    m2 = assess_mount(_entry(2, "/m2", opts.format(n=2)), probe, {}, memo=memo)
    assert all(a is b for a, b in zip(m1.lowers, m2.lowers, strict=True))
    assert m1.upper is not None and m2.upper is not None and m1.upper.path == "/u1" and m2.upper.path == "/u2"


_OPTION_NAMES = st.sampled_from([*_EFFECTIVE_KEYS, "default_permissions", "nfs_export_x", "xino_auto", "lowerdir+", "context"])
_VALUES = st.one_of(st.none(), st.sampled_from(["on", "off", "follow", "nofollow", "auto", "volatile", "require", "null", "Y"]))
_PARAMS = st.dictionaries(
    st.sampled_from(["index", "metacopy", "nfs_export", "xino_auto", "redirect_dir", "redirect_always_follow"]),
    st.sampled_from(["Y", "N"]),
)


@given(st.dictionaries(_OPTION_NAMES, _VALUES, max_size=8), _PARAMS)
def test_effective_options_depend_only_on_the_memo_key(options: dict[str, str | None], params: dict[str, str]) -> None:
    # AssessMemo keys effective options on the _EFFECTIVE_KEYS options alone: nothing else may matter
    only = {k: v for k, v in options.items() if k in _EFFECTIVE_KEYS}
    assert effective_options(options, params) == effective_options(only, params)


_NAMES = st.one_of(
    st.text(max_size=12),
    st.binary(max_size=12).map(os.fsdecode),  # non-UTF-8 bytes, surrogate-escaped
)


@given(st.integers(0, 600), st.sampled_from(list(LayerRole)), _NAMES, _NAMES, st.booleans(), st.sampled_from([True, False, None]), _NAMES)
def test_layer_record_fast_path_equals_general(index, role, written, path, resolved, exists, how) -> None:  # type: ignore[no-untyped-def]
    la = Layer(index, role, written, path, resolved, exists, how, {"cache-id": "x"})
    fast, general = layer_record(la), layer_record_general(la)
    assert fast == general and list(fast) == list(general)
