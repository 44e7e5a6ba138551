"""Bad input, fuzzed with hypothesis: the mountinfo parser, the overlay option decoder, the check
config file — and the same inputs through the CLI (`ls --mountinfo`, `check --config`).

The contract (issue 8): only the declared errors come out — an OvlinspectError (one line, exit
code) or a Problem next to the results — never another exception, never a traceback.
Regressions found by this file are kept as explicit examples below.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ovlinspect.analysis.mounts import assess_or_problem
from ovlinspect.cli import app
from ovlinspect.config import ConfigError, parse_config
from ovlinspect.errors import InputError, OvlinspectError, Problem
from ovlinspect.mountinfo import MAX_LINE_PROBLEMS, decode_octal, parse_mountinfo
from ovlinspect.overlayopts import escape_user, parse_overlay_options, split_lowerdir, split_options

runner = CliRunner()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))

# Tokens that matter to the grammars: separators, escapes, option keys, odd bytes.
_TOKENS = [
    b" ", b"-", b" - ", b"\\", b"\\040", b"\\134", b"\\054", b"\\072", b"\\1", b"\\9", b"0", b"1", b"36", b":", b"0:22",
    b",", b"=", b"\n", b"\t", b"overlay", b"lowerdir=", b"upperdir=", b"workdir=", b"lowerdir+=", b"datadir+=", b"::",
    b":::", b"\\:", b"\\,", b'"', b'context="', b"\xff", b"\x00", b"/a", b"/", b"rw", b"shared:1", b"master:2",
    b"99999999999999999999999", b"-1", b"fuse.fuse-overlayfs", b"/proc/self/fd/3", b"l/ABC", b"1/fs",
]
token_bytes = st.lists(st.sampled_from(_TOKENS), max_size=40).map(b"".join)
_GOOD = (
    b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
    b"100 29 0:52 / /var/lib/docker/overlay2/abc/merged rw,relatime shared:5 - overlay overlay "
    b"rw,lowerdir=/t/lo\\040w\\134\\0541:/t/lo\\134:w2,upperdir=/u,workdir=/w\n"
)


def _mutated(base: bytes) -> st.SearchStrategy[bytes]:
    """`base` with a few byte ranges replaced by tokens or random bytes."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        b = bytearray(base)
        for _ in range(draw(st.integers(1, 6))):
            i = draw(st.integers(0, len(b)))
            j = min(len(b), i + draw(st.integers(0, 12)))
            b[i:j] = draw(st.one_of(st.sampled_from(_TOKENS), st.binary(max_size=6)))
        return bytes(b)

    return build()


class _Probe:
    """The analyses' filesystem protocol, answering "unknown" (a replayed host)."""

    def exists(self, path: str) -> bool | None:
        return None

    def realpath(self, path: str) -> str:
        return path

    def page_size(self) -> int:
        return 4096


@FUZZ
@given(st.one_of(st.binary(max_size=300), token_bytes, _mutated(_GOOD), st.binary(max_size=60).map(lambda b: (b + b"\n") * 150)))
def test_mountinfo_parser_never_raises(data: bytes) -> None:
    entries, problems = parse_mountinfo(data)
    lines = [ln for ln in data.split(b"\n") if ln.strip()]
    # every non-blank line is either an entry or exactly one Problem naming its line number
    # (past MAX_LINE_PROBLEMS, one last Problem counts the rest)
    if len(lines) - len(entries) <= MAX_LINE_PROBLEMS:
        assert len(entries) + len(problems) == len(lines)
    else:
        assert len(problems) == MAX_LINE_PROBLEMS + 1 and problems[-1].line is None
        problems = problems[:-1]
    for p in problems:
        assert isinstance(p, Problem) and p.kind == "malformed" and p.line is not None
        assert "\n" not in p.message
    for e in entries:
        m, prob = assess_or_problem(e, _Probe(), {})
        assert (m is None) != (prob is None)
        if prob is not None:
            assert prob.kind == "malformed" and "\n" not in prob.message


@FUZZ
@given(st.one_of(st.text(max_size=200), token_bytes.map(lambda b: b.decode("utf-8", "surrogateescape"))))
def test_overlay_options_only_input_errors(raw: str) -> None:
    try:
        spec = parse_overlay_options(raw)
    except InputError as exc:
        assert exc.message and "\n" not in exc.message
        return
    assert spec.lowerdirs, "a decoded overlay always has a lower layer"
    for la in spec.layers:
        assert isinstance(la.path, str)


@FUZZ
@given(st.lists(st.text(min_size=1, max_size=12).filter(lambda s: "\0" not in s), min_size=1, max_size=8),
       st.lists(st.text(min_size=1, max_size=12), max_size=3))
def test_split_lowerdir_round_trips_escaped_paths(lowers: list[str], datas: list[str]) -> None:
    """Any path list written with the user escapes splits back into exactly those paths."""
    value = ":".join(escape_user(p) for p in lowers) + "".join("::" + escape_user(d) for d in datas)
    lo, da = split_lowerdir(value)
    assert [p for _w, p in lo] == lowers
    assert [p for _w, p in da] == datas


@FUZZ
@given(st.text(max_size=120))
def test_split_lowerdir_and_options_only_input_errors(value: str) -> None:
    try:
        split_lowerdir(value)
    except InputError:
        pass
    assert all(p for p in split_options(value))


@FUZZ
@given(st.binary(max_size=40))
def test_decode_octal_total(raw: bytes) -> None:
    out = decode_octal(raw)
    assert len(out) <= len(raw)
    if b"\\" not in raw:
        assert out == raw


# --- the check config file ------------------------------------------------------------------------

_SECTIONS = ["check", "checks.fs_free_inodes", "checks.lower_layers", "checks.orphan_bytes", "checks", "checks.nope", "other"]
_KEYS = ["timeout_seconds", "lock_file", "data_roots", "paths", "enabled", "warning_percent", "critical_percent",
         "warning_layers", "warning_bytes", "nope"]
_VALUES = ["1", "0", "-1", "1.5", "1e400", "nan", "inf", "-inf", '"x"', '"/abs"', "[]", "[1]", '["/a"]', '["rel"]', "true",
           "{}", "99999999999999999999999999999", "9" * 400, '"' + "9" * 400 + '"', '"0x10"', '"1e999"', "1979-05-27",
           '"' + "9" * 5000 + '"', "[" * 3000 + "]" * 3000, "{a = " * 2000 + "1" + "}" * 2000]
config_docs = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.lists(st.tuples(st.sampled_from(_SECTIONS), st.sampled_from(_KEYS), st.sampled_from(_VALUES)), min_size=1, max_size=4).map(
        lambda items: "".join(f"[{s}]\n{k} = {v}\n" for s, k, v in items).encode()
    ),
)


@FUZZ
@given(config_docs)
@example(b"[check]\ntimeout_seconds = " + b"9" * 400 + b"\n")  # was OverflowError (int too large for float)
@example(b"[checks.fs_free_inodes]\nwarning_percent = " + b"9" * 400 + b"\n")  # same, in a threshold
@example(b"[checks.lower_layers]\nwarning_layers = \"" + b"9" * 400 + b"\"\n")
@example(b"a = " + b"[" * 5000)  # was RecursionError out of tomllib
def test_config_only_config_errors(data: bytes) -> None:
    try:
        cfg = parse_config(data, "/etc/ovlinspect/config.toml")
    except ConfigError as exc:
        assert exc.message.startswith("/etc/ovlinspect/config.toml") and "\n" not in exc.message
        return
    assert 0 < cfg.timeout_seconds <= 3600


# --- the same through the CLI: one line on stderr, a declared exit code, no traceback -------------


def _one_line_error(res) -> None:  # type: ignore[no-untyped-def]
    err = res.stderr
    assert "Traceback" not in res.output + err
    assert "internal error" not in err, err
    if res.exit_code not in (0, 1):
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(lines) <= 1


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.binary(max_size=300), _mutated(_GOOD), token_bytes))
def test_cli_ls_replays_any_mountinfo(tmp_path_factory, data: bytes) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path_factory.mktemp("mi") / "mountinfo"
    f.write_bytes(data)
    for args in (["ls", "--mountinfo", str(f)], ["ls", "-l", "--json", "--mountinfo", str(f)]):
        res = runner.invoke(app, args)
        assert res.exit_code in (0, 3), (res.exit_code, res.output)
        _one_line_error(res)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(config_docs)
def test_cli_check_config_exit_3_one_line(tmp_path_factory, data: bytes) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path_factory.mktemp("cfg") / "config.toml"
    f.write_bytes(data)
    res = runner.invoke(app, ["check", "--list", "--config", str(f)])
    try:
        parse_config(data, str(f))
        ok = True
    except OvlinspectError:
        ok = False
    if ok:
        assert res.exit_code == 0, res.output
    else:
        assert res.exit_code == 3, res.output  # the monitoring convention: UNKNOWN
        assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")
    _one_line_error(res)


def test_cli_mountinfo_that_is_a_directory_or_missing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for target, code in ((str(tmp_path), None), (str(tmp_path / "missing"), 4)):
        res = runner.invoke(app, ["ls", "--mountinfo", target])
        assert res.exit_code != 0 and (code is None or res.exit_code == code)
        assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
        _one_line_error(res)


def test_mountinfo_with_nul_and_invalid_utf8_is_lossless() -> None:
    line = b"36 35 98:0 / /mnt/\xff\\011x rw - ext4 /dev/\xfe rw\n"
    (e,), probs = parse_mountinfo(line)
    assert not probs
    assert os.fsencode(e.mountpoint) == b"/mnt/\xff\tx" and os.fsencode(e.source) == b"/dev/\xfe"
