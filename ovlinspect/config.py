"""Settings of `ovlinspect check` from /etc/ovlinspect/config.toml (or --config) and flags.

Reads one TOML file (tomllib); everything else is pure validation. Every error names the key
(`checks.fs_free_inodes.warning_percent: must be between 0 and 100, got 120`).

File layout:
    [check]
    timeout_seconds = 10            # per gathering step; a hung filesystem => UNKNOWN
    lock_file = "/run/ovlinspect/check.lock"
    data_roots = ["/var/lib/docker"]  # default: discovered (running daemons, their configs, the defaults)
    paths = []                      # more paths whose filesystem to watch (free space, inodes, d_type)

    [checks.fs_free_inodes]         # one table per check id
    enabled = true
    warning_percent = 10
    critical_percent = 5
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field

from ovlinspect.analysis.checks import CHECKS_BY_ID, CheckSettings, SettingError, default_settings
from ovlinspect.errors import InputError

DEFAULT_CONFIG = "/etc/ovlinspect/config.toml"
DEFAULT_LOCK = "/run/ovlinspect/check.lock"
# The runtimes' default data roots (Docker, containers/storage rootful, containerd).
DEFAULT_DATA_ROOTS = ("/var/lib/docker", "/var/lib/containers/storage", "/var/lib/containerd")
DEFAULT_TIMEOUT = 10.0
MAX_CONFIG_BYTES = 1024 * 1024


class ConfigError(InputError):
    """A config file or flag value that failed validation (the message names the key)."""


@dataclass(frozen=True)
class CheckConfig:
    timeout_seconds: float = DEFAULT_TIMEOUT
    lock_file: str | None = None  # None: the default for this user (see default_lock_file)
    data_roots: tuple[str, ...] | None = None  # None: discover (ovlinspect.runtimes), else exactly these
    paths: tuple[str, ...] = ()
    checks: dict[str, CheckSettings] = field(default_factory=default_settings)
    source: str | None = None  # the file the settings came from


def default_lock_file() -> str:
    """/run/ovlinspect/check.lock for root; a per-user lock elsewhere (non-root cannot write /run)."""
    if os.geteuid() == 0:
        return DEFAULT_LOCK
    rt = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(rt, "ovlinspect-check.lock") if rt else f"/tmp/ovlinspect-{os.geteuid()}/check.lock"


def _timeout(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: must be a number of seconds, got {value!r}") from None
        else:
            raise ConfigError(f"{key}: must be a number of seconds, got {value!r}")
    try:
        v = float(value)  # type: ignore[arg-type]
    except OverflowError:  # an integer too big for a float
        v = float("inf")
    if not (0 < v <= 3600):
        raise ConfigError(f"{key}: must be more than 0 and at most 3600 seconds, got {value!r}")
    return v


def _path_list(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}: must be a list of paths (strings), got {value!r}")
    for v in value:
        if not v.startswith("/"):
            raise ConfigError(f"{key}: {v!r} is not an absolute path")
    return tuple(value)


def apply_table(cfg: CheckConfig, doc: Mapping[str, object], where: str) -> CheckConfig:
    """Validate a parsed config document over `cfg`; `where` prefixes error messages (the file)."""
    pre = f"{where}: " if where else ""
    timeout, lock, roots, paths = cfg.timeout_seconds, cfg.lock_file, cfg.data_roots, cfg.paths
    checks = dict(cfg.checks)
    for top, val in doc.items():
        if top == "check":
            if not isinstance(val, dict):
                raise ConfigError(f"{pre}check: must be a table")
            for k, v in val.items():
                key = f"check.{k}"
                if k == "timeout_seconds":
                    timeout = _timeout(v, pre + key)
                elif k == "lock_file":
                    if not isinstance(v, str) or not v.startswith("/"):
                        raise ConfigError(f"{pre}{key}: must be an absolute path, got {v!r}")
                    lock = v
                elif k == "data_roots":
                    roots = _path_list(v, pre + key)
                elif k == "paths":
                    paths = _path_list(v, pre + key)
                else:
                    raise ConfigError(f"{pre}{key}: unknown setting (known: timeout_seconds, lock_file, data_roots, paths)")
        elif top == "checks":
            if not isinstance(val, dict):
                raise ConfigError(f"{pre}checks: must be a table of check ids")
            for cid, table in val.items():
                if cid not in CHECKS_BY_ID:
                    raise ConfigError(f"{pre}checks.{cid}: unknown check id (known: {', '.join(CHECKS_BY_ID)})")
                if not isinstance(table, dict):
                    raise ConfigError(f"{pre}checks.{cid}: must be a table")
                try:
                    checks[cid] = CHECKS_BY_ID[cid].settings(table, checks[cid])
                except SettingError as exc:
                    raise ConfigError(f"{pre}checks.{cid}.{exc.key}: {exc.message}") from None
        else:
            raise ConfigError(f"{pre}{top}: unknown section (known: [check], [checks.<id>])")
    return CheckConfig(timeout, lock, roots, paths, checks, cfg.source)


def parse_config(data: bytes, where: str) -> CheckConfig:
    """Parse TOML text into a validated CheckConfig (pure)."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses per nesting level: `a = [[[[…` a few thousand deep
        raise ConfigError(f"{where}: not valid TOML: arrays or tables nested too deeply") from None
    cfg = apply_table(CheckConfig(), doc, where)
    return CheckConfig(cfg.timeout_seconds, cfg.lock_file, cfg.data_roots, cfg.paths, cfg.checks, where)


def read_config(path: str | None) -> CheckConfig:
    """The config from `path`, or from /etc/ovlinspect/config.toml when it exists (I/O)."""
    explicit = path is not None
    p = path or DEFAULT_CONFIG
    try:
        with open(p, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {p} does not exist", hint="give an existing file to --config") from None
        return CheckConfig()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{p}: larger than {MAX_CONFIG_BYTES} bytes")
    return parse_config(data, p)


def apply_flags(
    cfg: CheckConfig,
    sets: list[str],
    disable: list[str],
    enable: list[str],
    timeout: float | None,
    lock_file: str | None,
    data_roots: list[str],
    paths: list[str],
) -> CheckConfig:
    """Command-line overrides: `--set ID.KEY=VALUE`, `--disable ID`, `--enable ID`, ... (pure)."""
    checks = dict(cfg.checks)
    for item in sets:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set {item!r}: expected CHECK_ID.SETTING=VALUE, e.g. fs_free_inodes.warning_percent=20")
        lhs, value = item.split("=", 1)
        cid, key = lhs.split(".", 1)
        if cid not in CHECKS_BY_ID:
            raise ConfigError(f"--set {cid}.{key}: unknown check id (known: {', '.join(CHECKS_BY_ID)})")
        try:
            checks[cid] = CHECKS_BY_ID[cid].settings({key: value}, checks[cid])
        except SettingError as exc:
            raise ConfigError(f"--set {cid}.{exc.key}: {exc.message}") from None
    for flag, ids, on in (("--disable", disable, False), ("--enable", enable, True)):
        for cid in ids:
            if cid not in CHECKS_BY_ID:
                raise ConfigError(f"{flag} {cid}: unknown check id (known: {', '.join(CHECKS_BY_ID)})")
            checks[cid] = CheckSettings(on, checks[cid].params)
    t = _timeout(timeout, "--timeout") if timeout is not None else cfg.timeout_seconds
    for flag, vals in (("--data-root", data_roots), ("--path", paths)):
        for v in vals:
            if not v.startswith("/"):
                raise ConfigError(f"{flag} {v!r}: must be an absolute path")
    return CheckConfig(
        t,
        lock_file or cfg.lock_file,
        tuple(data_roots) if data_roots else cfg.data_roots,
        cfg.paths + tuple(paths),
        checks,
        cfg.source,
    )
