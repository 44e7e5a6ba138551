"""`check` without root: the registry and thresholds on literal inputs, config validation (errors
name the key), the renderers (text quiet/verbose, JSON, Nagios perfdata, Prometheus escaping),
the deadline helper, and the CLI's exit codes for bad input (always 3, never 2)."""

from __future__ import annotations

import json
import os
import threading

import pytest
from typer.testing import CliRunner

from ovlinspect.analysis.checks import (
    CHECKS,
    CHECKS_BY_ID,
    BtrfsState,
    CheckInputs,
    FilesystemState,
    LeftoverScan,
    OrphanTotal,
    Status,
    default_settings,
    make_report,
    run_checks,
    worst,
)
from ovlinspect.checks_run import backing_entry, call_with_deadline, run_parallel
from ovlinspect.cli import app
from ovlinspect.config import ConfigError, apply_flags, parse_config
from ovlinspect.model import MountEntry
from ovlinspect.render.checks import report_doc, text_lines
from ovlinspect.render.nagios import render_nagios
from ovlinspect.render.prometheus import escape_label_value, render_prometheus

GiB = 1 << 30


def fs(mp: str = "/var/lib/docker", fstype: str = "ext4", **kw: object) -> FilesystemState:
    base: dict[str, object] = dict(size_bytes=100 * GiB, avail_bytes=50 * GiB, inodes=1000, inodes_free=900, dtype=True, dtype_detail="ok")
    base.update(kw)
    return FilesystemState(mp, fstype, "/dev/sda1", ("data root /var/lib/docker",), **base)  # type: ignore[arg-type]


def inputs(**kw: object) -> CheckInputs:
    base: dict[str, object] = dict(mounts=(), filesystems=(fs(),), btrfs=(), orphans=(), leftovers=LeftoverScan())
    base.update(kw)
    return CheckInputs(**base)  # type: ignore[arg-type]


def report(inp: CheckInputs, **settings: dict[str, object]):  # type: ignore[no-untyped-def]
    s = default_settings()
    for cid, table in settings.items():
        s[cid] = CHECKS_BY_ID[cid].settings(table, s[cid])
    return make_report(run_checks(inp, s), 1_700_000_000.0, 0.25)


def status_of(rep, cid: str) -> Status:  # type: ignore[no-untyped-def]
    return next(r.status for r in rep.results if r.id == cid)


def test_ids_are_stable_and_unique() -> None:
    ids = [c.id for c in CHECKS]
    assert ids == ["btrfs_metadata", "fs_free_space", "fs_free_inodes", "backing_dtype", "layer_missing", "lower_layers",
                   "mount_options_length", "orphan_bytes", "volatile_marker", "stale_merged", "mountinfo_problems"]


def test_worst_never_masks_a_real_problem_with_unknown() -> None:
    assert worst([Status.OK, Status.UNKNOWN]) is Status.UNKNOWN
    assert worst([Status.UNKNOWN, Status.WARNING]) is Status.WARNING
    assert worst([Status.CRITICAL, Status.UNKNOWN, Status.WARNING]) is Status.CRITICAL
    assert worst([]) is Status.OK


@pytest.mark.parametrize("free_pct,expect", [(50, Status.OK), (10, Status.OK), (9.9, Status.WARNING), (5, Status.WARNING), (4.9, Status.CRITICAL)])
def test_free_space_thresholds(free_pct: float, expect: Status) -> None:
    rep = report(inputs(filesystems=(fs(avail_bytes=int(free_pct * GiB)),)))
    assert status_of(rep, "fs_free_space") is expect
    assert rep.status is expect


def test_inodes_dynamic_filesystems_are_not_exhausted() -> None:
    rep = report(inputs(filesystems=(fs(fstype="btrfs", inodes=0, inodes_free=0),)))
    assert status_of(rep, "fs_free_inodes") is Status.OK
    assert "without a fixed inode table" in next(r.summary for r in rep.results if r.id == "fs_free_inodes")


def test_missing_input_is_unknown_never_ok() -> None:
    rep = report(CheckInputs(mounts_error="reading the overlay mounts: no answer within 10s", btrfs_error="absent",
                             orphans_error="absent", filesystems_error="x", leftovers_error="y"))
    for r in rep.results:
        assert r.status is Status.UNKNOWN, r
    assert rep.status is Status.UNKNOWN
    assert "no answer within 10s" in next(r.summary for r in rep.results if r.id == "layer_missing")


def test_statvfs_timeout_is_unknown_for_that_filesystem_only() -> None:
    rep = report(inputs(filesystems=(fs(), fs("/srv", size_bytes=None, avail_bytes=None, inodes=None, inodes_free=None,
                                            statvfs_error="no answer within 2s (a hung filesystem?)", dtype=None))))
    r = next(r for r in rep.results if r.id == "fs_free_space")
    assert r.status is Status.UNKNOWN and len(r.findings) == 1 and "/srv" in r.findings[0].where


def test_xfs_ftype0_remedy() -> None:
    rep = report(inputs(filesystems=(fs("/var/lib/docker", "xfs", dtype=False, dtype_detail="3 of 3 entries of /x have DT_UNKNOWN"),)))
    r = next(r for r in rep.results if r.id == "backing_dtype")
    assert r.status is Status.CRITICAL and "mkfs.xfs -n ftype=1" in r.findings[0].todo


@pytest.mark.parametrize("verdict,expect", [("ok", Status.OK), ("warning", Status.WARNING), ("critical", Status.CRITICAL), ("unknown", Status.UNKNOWN), ("odd", Status.UNKNOWN)])
def test_btrfs_verdict_mapping(verdict: str, expect: Status) -> None:
    b = BtrfsState("/mnt/b", verdict, "metadata nearly full", ("balance",), {"unallocated_bytes": 1048576, "device_count": 1})
    rep = report(inputs(btrfs=(b,)))
    assert status_of(rep, "btrfs_metadata") is expect
    text = render_prometheus(rep)
    assert f'ovlinspect_btrfs_verdict_status{{filesystem="/mnt/b"}} {int(expect)}' in text
    assert 'ovlinspect_btrfs_unallocated_bytes{filesystem="/mnt/b"} 1048576' in text


def test_orphan_thresholds() -> None:
    o = (OrphanTotal("docker", 11 * GiB, 3), OrphanTotal("podman", 0, 0))
    assert status_of(report(inputs(orphans=o)), "orphan_bytes") is Status.WARNING
    assert status_of(report(inputs(orphans=o), orphan_bytes={"critical_bytes": 11 * GiB}), "orphan_bytes") is Status.CRITICAL
    assert status_of(report(inputs(orphans=o), orphan_bytes={"warning_bytes": 0}), "orphan_bytes") is Status.OK
    assert status_of(report(inputs(orphans=o), orphan_bytes={"enabled": False}), "orphan_bytes") is Status.OK


def test_text_quiet_when_ok_and_verbose_shows_all() -> None:
    rep = report(inputs())
    assert rep.status is Status.OK
    assert text_lines(rep) == []
    v = text_lines(rep, verbose=True)
    assert len(v) == len(CHECKS) + 1 and v[-1].startswith("ovlinspect check: OK")


def test_text_escapes_hostile_names() -> None:
    evil = "/var/lib/\x1b]0;pwned\x07\nfake OK line"
    rep = report(inputs(filesystems=(fs(evil, avail_bytes=0),)))
    lines = text_lines(rep)
    assert len(lines) == 2 and lines[0].startswith("CRITICAL fs_free_space: filesystem /var/lib/\\e]0;pwned\\x07\\nfake")
    assert all("\x1b" not in ln and "\n" not in ln for ln in lines)


def test_json_document() -> None:
    from ovlinspect.render.jsonout import dumps

    rep = report(inputs(filesystems=(fs(avail_bytes=0),)))
    doc = json.loads(dumps(report_doc(rep)))
    assert doc["schema_version"] == 1 and doc["status"] == 2 and doc["status_text"] == "CRITICAL"
    c = next(c for c in doc["checks"] if c["id"] == "fs_free_space")
    assert c["thresholds"] == {"warning_percent": 10.0, "critical_percent": 5.0}
    assert c["findings"][0]["labels"] == {"filesystem": "/var/lib/docker"}
    assert {"name": "ovlinspect_filesystem_avail_bytes", "labels": {"filesystem": "/var/lib/docker", "fstype": "ext4", "device": "/dev/sda1"}, "value": 0} in c["metrics"]


def test_nagios_status_line_and_perfdata() -> None:
    rep = report(inputs(filesystems=(fs("/var/lib/it's=odd", avail_bytes=3 * GiB),)))
    out = render_nagios(rep).splitlines()
    head, perf = out[0].split(" | ")
    assert head.startswith("OVLINSPECT CRITICAL - fs_free_space filesystem /var/lib/it's=odd")
    assert "'free /var/lib/it_s_odd'=3.00%;10:;5:;0;100" in perf
    assert "'inodes free /var/lib/it_s_odd'=90.00%;10:;5:;0;100" in perf
    assert out[1].startswith("CRITICAL fs_free_space:")
    ok = render_nagios(report(inputs())).splitlines()
    assert ok[0].startswith("OVLINSPECT OK - 11 checks OK | ") and len(ok) == 1


def test_prometheus_label_escaping() -> None:
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert escape_label_value(os.fsdecode(b"/x/\xff")) == "/x/\ufffd"
    rep = report(inputs(filesystems=(fs('/m "q"\\\n', avail_bytes=0),)))
    text = render_prometheus(rep)
    assert 'ovlinspect_finding_status{check="fs_free_space",filesystem="/m \\"q\\"\\\\\\n"} 2' in text.splitlines()
    assert text.endswith("\n") and "ovlinspect_last_run_timestamp_seconds 1700000000\n" in text
    # every family has HELP and TYPE once, before its samples
    names = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE")]
    assert len(names) == len(set(names))


# ---------------------------------------------------------------- config ----------------------
@pytest.mark.parametrize(
    "toml,key",
    [
        ("[checks.fs_free_inodes]\nwarning_percent = 120\n", "checks.fs_free_inodes.warning_percent"),
        ("[checks.fs_free_inodes]\nwarning_percent = 'lots'\n", "checks.fs_free_inodes.warning_percent"),
        ("[checks.fs_free_inodes]\nwarning_percent = true\n", "checks.fs_free_inodes.warning_percent"),
        ("[checks.fs_free_inodes]\nwarning_percent = 3\n", "checks.fs_free_inodes.critical_percent"),
        ("[checks.fs_free_inodes]\nwarn = 3\n", "checks.fs_free_inodes.warn"),
        ("[checks.fs_free_inodes]\nenabled = 'maybe'\n", "checks.fs_free_inodes.enabled"),
        ("[checks.no_such_check]\nenabled = false\n", "checks.no_such_check"),
        ("[checks.lower_layers]\nwarning_layers = 2.5\n", "checks.lower_layers.warning_layers"),
        ("[check]\ntimeout_seconds = 0\n", "check.timeout_seconds"),
        ("[check]\ndata_roots = 'var'\n", "check.data_roots"),
        ("[check]\npaths = ['relative']\n", "check.paths"),
        ("[check]\ncolour = 1\n", "check.colour"),
        ("[cheks]\n", "cheks"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_config_errors_name_the_key(toml: str, key: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(toml.encode(), "/etc/ovlinspect/config.toml")
    assert ei.value.message.startswith("/etc/ovlinspect/config.toml: ")
    assert key in ei.value.message


def test_config_and_flags_apply() -> None:
    cfg = parse_config(b"[check]\ntimeout_seconds = 3\ndata_roots = ['/d']\n[checks.stale_merged]\nenabled = false\n"
                       b"[checks.fs_free_space]\nwarning_percent = 20\n", "f")
    assert cfg.timeout_seconds == 3 and cfg.data_roots == ("/d",) and not cfg.checks["stale_merged"].enabled
    assert cfg.checks["fs_free_space"].params == {"warning_percent": 20.0, "critical_percent": 5.0}
    cfg2 = apply_flags(cfg, ["fs_free_space.critical_percent=15"], ["backing_dtype"], ["stale_merged"], 7, "/tmp/l", [], ["/srv"])
    assert cfg2.checks["fs_free_space"].params["critical_percent"] == 15.0
    assert not cfg2.checks["backing_dtype"].enabled and cfg2.checks["stale_merged"].enabled
    assert (cfg2.timeout_seconds, cfg2.lock_file, cfg2.paths, cfg2.data_roots) == (7, "/tmp/l", ("/srv",), ("/d",))
    with pytest.raises(ConfigError, match=r"--set fs_free_space.critical_percent: must not be greater than warning_percent"):
        apply_flags(cfg, ["fs_free_space.critical_percent=25"], [], [], None, None, [], [])
    with pytest.raises(ConfigError, match="--set 'nope': expected CHECK_ID.SETTING=VALUE"):
        apply_flags(cfg, ["nope"], [], [], None, None, [], [])
    with pytest.raises(ConfigError, match="--disable fs_free: unknown check id"):
        apply_flags(cfg, [], ["fs_free"], [], None, None, [], [])


# ---------------------------------------------------------------- CLI ----------------------------
runner = CliRunner()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--set", "fs_free_inodes.warning_percent=abc"], "--set fs_free_inodes.warning_percent: must be a number"),
        (["--disable", "nonsense"], "--disable nonsense: unknown check id"),
        (["--only", "nonsense"], "--only nonsense: unknown check id"),
        (["--timeout", "0"], "--timeout: must be more than 0"),
        (["--config", "/nonexistent/ovl.toml"], "config file /nonexistent/ovl.toml does not exist"),
        (["--format", "xml"], "Invalid value"),
        (["--bogus"], "No such option"),
    ],
)
def test_cli_errors_exit_unknown(args: list[str], needle: str) -> None:
    res = runner.invoke(app, ["check", *args])
    assert res.exit_code == 3, (res.exit_code, res.output)
    assert needle in res.output


def test_cli_bad_config_file_names_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "c.toml"
    cfg.write_text("[checks.lower_layers]\ncritical_layers = 9000\n")
    res = runner.invoke(app, ["check", "--config", str(cfg), "--list"])
    assert res.exit_code == 3
    assert f"error: {cfg}: checks.lower_layers.critical_layers: must be between 0 and 500, got 9000" in res.output


def test_cli_list(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "c.toml"
    cfg.write_text("[checks.stale_merged]\nenabled = false\n")
    res = runner.invoke(app, ["check", "--config", str(cfg), "--list", "--set", "orphan_bytes.warning_bytes=5"])
    assert res.exit_code == 0, res.output
    lines = {ln.split()[0]: ln for ln in res.stdout.splitlines()}
    assert set(lines) == set(CHECKS_BY_ID)
    assert lines["stale_merged"].split()[1] == "off" and "warning_bytes=5," in lines["orphan_bytes"]


def test_shipped_example_config_is_valid() -> None:
    here = os.path.join(os.path.dirname(__file__), "..", "contrib", "config.toml")
    with open(here, "rb") as fh:
        cfg = parse_config(fh.read(), here)
    assert cfg.checks == default_settings()  # the example documents the defaults


def test_cli_unwritable_textfile_is_unknown(tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = runner.invoke(app, ["check", "--only", "lower_layers", "--lock", str(tmp_path / "lock"),
                              "--textfile", str(tmp_path / "no-such-dir" / "x.prom")])
    assert res.exit_code == 3
    assert f"error: cannot write the textfile {tmp_path}/no-such-dir/x.prom" in res.output


def test_cli_help_mentions_exit_codes() -> None:
    res = runner.invoke(app, ["check", "--help"])
    assert res.exit_code == 0 and "0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN" in res.output


# ---------------------------------------------------------------- plumbing ----------------------
def test_deadline_gives_up_on_a_stuck_call() -> None:
    gate = threading.Event()
    val, err = call_with_deadline(gate.wait, 0.2, "statvfs /stuck")
    assert val is None and err == "statvfs /stuck: no answer within 0.2s (a hung filesystem?)"
    gate.set()
    assert call_with_deadline(lambda: 42, 5, "x") == (42, None)
    val, err = call_with_deadline(lambda: os.statvfs("/nonexistent/x"), 5, "statvfs")
    assert val is None and err is not None and "No such file" in err
    out = run_parallel({"a": lambda: 1, "b": threading.Event().wait}, 0.2)
    assert out["a"] == (1, None) and out["b"][0] is None


def _e(mid: int, mp: str) -> MountEntry:
    return MountEntry(mid, 1, 8, 1, "/", mp, "rw", (), "ext4", "/dev/x", "rw")


def test_backing_entry_longest_prefix_last_mounted_wins() -> None:
    es = [_e(1, "/"), _e(2, "/var"), _e(3, "/var/lib/docker"), _e(4, "/var/lib/docker")]
    assert backing_entry("/var/lib/docker/overlay2/x/diff", es).mount_id == 4  # type: ignore[union-attr]
    assert backing_entry("/var/lib/dockerx", es).mount_id == 2  # type: ignore[union-attr]
    assert backing_entry("/srv", es).mount_id == 1  # type: ignore[union-attr]


def test_replayed_mountinfo(samples, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A captured mountinfo (Docker sample): the mount checks run on it, the host-only ones say why not."""
    mi = os.path.join(samples, "docker", "host-mountinfo-with-running-container.txt")
    res = runner.invoke(app, ["check", "--mountinfo", mi, "--lock", str(tmp_path / "lock"), "--format", "json"])
    doc = json.loads(res.stdout)
    by = {c["id"]: c for c in doc["checks"]}
    assert by["lower_layers"]["status_text"] == "OK" and by["layer_missing"]["status_text"] == "OK"
    assert "1 overlay mount(s)" in by["layer_missing"]["summary"]
    for cid in ("fs_free_space", "btrfs_metadata", "orphan_bytes", "stale_merged"):
        assert by[cid]["status_text"] == "UNKNOWN" and "replaying" in by[cid]["summary"], by[cid]
    assert res.exit_code == 3 == doc["status"]
    only = runner.invoke(app, ["check", "--mountinfo", mi, "--lock", str(tmp_path / "lock"), "--only", "lower_layers", "--only", "layer_missing"])
    assert (only.exit_code, only.stdout) == (0, "")


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_prometheus_labels_round_trip(name: str) -> None:
    """Any path (any Unicode, quotes, backslashes, newlines, lone surrogates from non-UTF-8 bytes)
    comes back out of the exposition exactly (surrogates as U+FFFD), one sample per line."""
    from check_env import parse_exposition

    from ovlinspect.render.jsonout import display

    rep = report(inputs(filesystems=(fs(name, avail_bytes=0),)))
    text = render_prometheus(rep)
    text.encode("utf-8")  # valid UTF-8, whatever the name
    samples = parse_exposition(text)
    key = ("ovlinspect_finding_status", frozenset({("check", "fs_free_space"), ("filesystem", display(name))}))
    assert samples[key] == 2
