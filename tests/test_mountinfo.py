"""Unit: the mountinfo parser and the overlay option decoder on real samples and literals."""

from __future__ import annotations

import glob
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ovlinspect.errors import InputError
from ovlinspect.model import LayerRole
from ovlinspect.mountinfo import decode_octal, parse_mountinfo
from ovlinspect.overlayopts import parse_overlay_options, split_options


def _overlay_lines(samples: str) -> list[bytes]:
    lines = []
    for path in glob.glob(os.path.join(samples, "**", "*.txt"), recursive=True):
        with open(path, "rb") as fh:
            for line in fh.read().split(b"\n"):
                if b" - overlay " in line and line[:1].isdigit():
                    lines.append(line)
    return lines


def test_every_sample_overlay_line_decodes(samples: str) -> None:
    lines = _overlay_lines(samples)
    assert len(lines) >= 10
    for line in lines:
        entries, problems = parse_mountinfo(line)
        assert problems == [], line
        (e,) = entries
        spec = parse_overlay_options(e.super_options_raw)
        raw_lower = next(p for p in split_options(e.super_options_raw) if p.startswith("lowerdir="))
        # no escapes in these samples except \040: each ':' separates a layer, '::' starts data-only
        expect = decode_octal(raw_lower[len("lowerdir=") :].encode()).decode()
        top, *data = expect.split("::")
        assert [la.path for la in spec.lowerdirs] == top.split(":")
        assert [la.path for la in spec.datadirs] == data
        assert all(la.role is LayerRole.LOWER for la in spec.lowerdirs)


def test_docker_sample_chain(samples: str) -> None:
    with open(os.path.join(samples, "docker", "host-mountinfo-overlay-line.txt"), "rb") as fh:
        entries, problems = parse_mountinfo(fh.read())
    assert not problems
    e = next(x for x in entries if x.fstype == "overlay")
    spec = parse_overlay_options(e.super_options_raw)
    assert e.mountpoint.endswith("/merged")
    assert spec.upperdir is not None and spec.upperdir.path.endswith("/diff")
    assert spec.workdir is not None and spec.workdir.endswith("/work")
    assert all(la.path.startswith("/var/lib/docker/overlay2/l/") for la in spec.lowerdirs)


def test_manual_variants(samples: str) -> None:
    with open(os.path.join(samples, "docker", "manual-overlay-option-variants.txt"), "rb") as fh:
        entries, _ = parse_mountinfo(b"\n".join(x for x in fh.read().split(b"\n") if x[:1].isdigit()))
    by_mp = {}
    for e in entries:
        by_mp.setdefault(e.mountpoint, []).append(parse_overlay_options(e.super_options_raw))
    # relative lowers as the user wrote them, options normalised by the kernel kept verbatim
    rel = by_mp["/srv/ovl-test/mnt"][0]
    assert [la.path for la in rel.lowerdirs] == ["lo2", "lo1"]
    assert rel.options["redirect_dir"] == "on" and rel.options["metacopy"] == "on" and rel.options["index"] == "on"
    assert rel.options["uuid"] == "on"
    ux = by_mp["/srv/ovl-test/mnt2"][0]
    assert "userxattr" in ux.options and ux.options["userxattr"] is None
    assert ux.options["redirect_dir"] == "nofollow"
    vol = by_mp["/srv/ovl-test/mnt3"][0]
    assert vol.options["fsync"] == "volatile"
    space = by_mp["/srv/ovl-test/m nt"][0]
    assert [la.path for la in space.lowerdirs] == ["/srv/ovl-test/lo 3", "/srv/ovl-test/lo1"]
    assert space.upperdir is None and space.options.get("ro", "x") is None
    data_only = [s for s in by_mp["/srv/ovl-test/mnt"] if s.datadirs][0]
    assert [la.path for la in data_only.lowerdirs] == ["/srv/ovl-test/lo1"]
    assert [la.path for la in data_only.datadirs] == ["/srv/ovl-test/lo2"]
    assert data_only.datadirs[0].role is LayerRole.DATA_ONLY


def test_design_example_escapes() -> None:
    # DESIGN.md §3, seen on this kernel: `lowerdir=/t/lo\040w\134\0541:/t/lo\134:w2`
    spec = parse_overlay_options(r"rw,lowerdir=/t/lo\040w\134\0541:/t/lo\134:w2,upperdir=/t/u\040p\134\054x,workdir=/t/w")
    assert [la.path for la in spec.lowerdirs] == ["/t/lo w,1", "/t/lo:w2"]
    assert [la.written for la in spec.lowerdirs] == ["/t/lo w\\,1", "/t/lo\\:w2"]
    assert spec.upperdir is not None and spec.upperdir.path == "/t/u p,x"  # legacy: user escapes removed
    assert spec.api == "legacy"


def test_new_api_paths_are_verbatim() -> None:
    spec = parse_overlay_options(
        r"rw,lowerdir+=/t/lb\134x,lowerdir+=/t/lo\040w\0541,lowerdir+=/t/lo:w2,datadir+=/t/a=b,upperdir=/t/b\134sl,workdir=/t/w\040k,uuid=on"
    )
    assert spec.api == "new"
    assert [la.path for la in spec.lowerdirs] == ["/t/lb\\x", "/t/lo w,1", "/t/lo:w2"]
    assert [la.path for la in spec.datadirs] == ["/t/a=b"]
    assert spec.upperdir is not None and spec.upperdir.path == "/t/bsl"  # upperdir is unescaped with either API
    assert spec.workdir == "/t/w k"
    assert spec.options == {"rw": None, "uuid": "on"}


def test_selinux_context_quoted_commas() -> None:
    spec = parse_overlay_options('rw,context="system_u:object_r:container_file_t:s0:c1,c2",lowerdir=/a:/b,upperdir=/u,workdir=/w')
    assert spec.options["context"] == '"system_u:object_r:container_file_t:s0:c1,c2"'
    assert [la.path for la in spec.lowerdirs] == ["/a", "/b"]


def test_empty_source_and_optional_tags() -> None:
    line = b"51 42 0:39 / /m rw,relatime shared:2 master:7 propagate_from:3 - overlay  rw,lowerdir=/a,upperdir=/u,workdir=/w"
    (e,), problems = parse_mountinfo(line)
    assert not problems
    assert e.source == "" and e.optional_fields == ("shared:2", "master:7", "propagate_from:3")


def test_octal_escapes_in_every_field() -> None:
    line = rb"7 1 0:5 /r\040t /m\011x\012y\134z rw - overlay s\040rc rw,lowerdir=/a\072b"
    (e,), _ = parse_mountinfo(line)
    assert e.root == "/r t" and e.mountpoint == "/m\tx\ny\\z" and e.source == "s rc"
    # \072 is ':' after octal decoding: still a separator in the user string (the kernel would
    # have printed a literal ':' there; an escaped colon is written \134: )
    assert [la.path for la in parse_overlay_options(e.super_options_raw).lowerdirs] == ["/a", "b"]


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"garbage",
        b"1 2 3",
        b"1 2 0:1 / /m rw - overlay",
        b"x 2 0:1 / /m rw - overlay overlay rw",
        b"1 2 0-1 / /m rw - overlay overlay rw",
        b"1 2 0:1 / /m rw shared:1 overlay overlay rw",
        b"1 2 0:1 / /m rw - overlay overlay rw extra",
        b"\xff\xfe 2 0:1 / /m rw - overlay overlay rw",
    ],
)
def test_malformed_lines_are_problems(line: bytes) -> None:
    good = b"5 1 0:2 / /ok rw - overlay overlay rw,lowerdir=/a"
    entries, problems = parse_mountinfo(line + b"\n" + good)
    assert [e.mountpoint for e in entries] == ["/ok"]
    if line.strip():
        assert len(problems) == 1 and problems[0].line == 1 and "mountinfo line 1" in problems[0].message


@pytest.mark.parametrize(
    "opts",
    ["rw", "rw,lowerdir=", "lowerdir=/a::", "lowerdir=/a::/b:/c", "lowerdir=/a:::/b", "lowerdir=/a,lowerdir+=/b", "lowerdir=/a,lowerdir=/b", "lowerdir=:/a"],
)
def test_malformed_options_raise_input_error(opts: str) -> None:
    with pytest.raises(InputError):
        parse_overlay_options(opts)


# --- round trip: encode paths the way the kernel prints them, decode them back ----------------

_path_bytes = st.binary(min_size=1, max_size=40).filter(lambda b: b"\x00" not in b)
_SEQ_ESCAPE = b",= \t\n\\"  # seq_show_option() escapes these as \ooo


def _kernel_print(value: bytes) -> bytes:
    return b"".join(b"\\%03o" % c if c in _SEQ_ESCAPE else bytes((c,)) for c in value)


def _user_escape(p: bytes) -> bytes:
    return p.replace(b"\\", b"\\\\").replace(b":", b"\\:").replace(b",", b"\\,")


@settings(max_examples=300)
@given(lowers=st.lists(_path_bytes, min_size=1, max_size=6), datas=st.lists(_path_bytes, max_size=3), upper=_path_bytes)
def test_roundtrip_legacy(lowers: list[bytes], datas: list[bytes], upper: bytes) -> None:
    user = b":".join(_user_escape(p) for p in lowers)
    if datas:
        user += b"".join(b"::" + _user_escape(p) for p in datas)
    up = upper.replace(b"\\", b"\\\\").replace(b",", b"\\,")
    opts = b"rw,lowerdir=" + _kernel_print(user) + b",upperdir=" + _kernel_print(up) + b",workdir=" + _kernel_print(up)
    line = b"10 1 0:40 / /m rw - overlay overlay " + opts
    (e,), problems = parse_mountinfo(line)
    assert not problems
    spec = parse_overlay_options(e.super_options_raw)
    assert [os.fsencode(la.path) for la in spec.lowerdirs] == lowers
    assert [os.fsencode(la.path) for la in spec.datadirs] == datas
    assert spec.upperdir is not None and os.fsencode(spec.upperdir.path) == upper


@settings(max_examples=300)
@given(lowers=st.lists(_path_bytes, min_size=1, max_size=6), datas=st.lists(_path_bytes, max_size=3))
def test_roundtrip_new_api(lowers: list[bytes], datas: list[bytes]) -> None:
    parts = [b"lowerdir+=" + _kernel_print(p) for p in lowers] + [b"datadir+=" + _kernel_print(p) for p in datas]
    line = b"10 1 0:40 / /m rw - overlay none rw," + b",".join(parts)
    (e,), problems = parse_mountinfo(line)
    assert not problems
    spec = parse_overlay_options(e.super_options_raw)
    assert [os.fsencode(la.path) for la in spec.lowerdirs] == lowers
    assert [os.fsencode(la.path) for la in spec.datadirs] == datas


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_fuzz_never_raises_undeclared(data: bytes) -> None:
    entries, problems = parse_mountinfo(data)
    for e in entries:
        try:
            parse_overlay_options(e.super_options_raw)
        except InputError as exc:
            assert exc.message and "\n" not in exc.message


@settings(max_examples=300)
@given(st.lists(st.sampled_from(list('ab:\\,="=+') + ["lowerdir=", "lowerdir+=", "datadir+=", "upperdir=", "context=\""]), max_size=30))
def test_fuzz_option_decoder(tokens: list[str]) -> None:
    raw = "".join(tokens)
    try:
        spec = parse_overlay_options(raw)
    except InputError:
        return
    assert spec.lowerdirs
