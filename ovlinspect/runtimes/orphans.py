"""Gather orphan facts from every runtime root and classify them (I/O: lstat/scandir, never follows links).

Sizes are allocated bytes (st_blocks * 512) like `du -s -B1`, hard links counted once, never
crossing into another filesystem (a mount on a leaked dir is not ours to count).
"""

from __future__ import annotations

import os
import stat
import time
from typing import Any

from ovlinspect.analysis.orphans import OrphanReport, classify_all
from ovlinspect.errors import Problem

# While a daemon runs, a dir younger than this may be a layer being created right now.
DEFAULT_MIN_AGE_SECONDS = 600.0


def age_of(path: str, now: float) -> float | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return max(0.0, now - max(st.st_mtime, st.st_ctime))


def allocated_bytes(path: str) -> int | None:
    """Allocated bytes under `path` (not following symlinks, one filesystem). None if unreadable."""
    try:
        top = os.lstat(path)
    except OSError:
        return None
    total = top.st_blocks * 512
    if not stat.S_ISDIR(top.st_mode):
        return total
    dev = top.st_dev
    seen: set[tuple[int, int]] = set()
    stack = [path]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_dev != dev:
                    continue
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    stack.append(e.path)
    return total


def buildkit_mentions(docker_root: str, layer_id: str) -> str | None:
    """BuildKit (Docker's builder-next) creates driver layers itself and records them in its own
    bolt files; any mention of the id there counts as a reference (a raw byte search: it can only
    make us more careful)."""
    bk = os.path.join(docker_root, "buildkit")
    for name in ("snapshots.db", "cache.db", "metadata_v2.db", "containerdmeta.db"):
        p = os.path.join(bk, name)
        try:
            with open(p, "rb") as fh:
                if layer_id.encode() in fh.read(256 << 20):
                    return f"buildkit/{name}"
        except OSError:
            continue
    return None


def mounted_paths(roots: Any, pids: list[int]) -> tuple[set[str], list[Problem]]:
    """Mount points and resolved layer dirs of every overlay mount seen by us and by the daemons."""
    from ovlinspect import hostfs
    from ovlinspect.analysis.mounts import assess_or_problem, is_overlay
    from ovlinspect.mountinfo import parse_mountinfo

    out: set[str] = set()
    problems: list[Problem] = []
    sources: list[bytes] = []
    try:
        sources.append(hostfs.read_mountinfo(roots))
    except Exception as exc:  # noqa: BLE001 - reported as a problem; orphans then stay "unknown"
        problems.append(Problem("io", f"cannot read mountinfo: {exc}"))
    for pid in pids:
        data, _pid, prob = hostfs.read_namespace_mountinfo(roots, [pid])
        if data is not None:
            sources.append(data)
        elif prob:
            problems.append(prob)
    probe = hostfs.HostProbe(enabled=True)
    params = hostfs.read_module_params(roots)
    for data in sources:
        entries, _probs = parse_mountinfo(data)
        for e in entries:
            out.add(os.path.normpath(e.mountpoint))
            if not is_overlay(e):
                continue
            m, _p = assess_or_problem(e, probe, params)
            if m is None:
                continue
            for la in m.layers:
                if la.resolved:
                    out.add(os.path.normpath(la.path))
                    out.add(probe.realpath(la.path))
            if m.workdir:
                out.add(os.path.normpath(m.workdir))
    return out, problems


def collect_orphans(roots: Any, rr: Any, min_age_seconds: float | None = None) -> tuple[OrphanReport, list[Problem]]:
    from ovlinspect.runtimes.registry import load_all

    loaded = load_all(rr)
    problems = list(loaded.problems)
    pids = sorted({f.daemon_pid for f in (*rr.docker, *rr.podman, *rr.containerd) if f.daemon_pid})
    mounted, probs = mounted_paths(roots, pids)
    problems.extend(probs)
    now = time.time()
    facts = []
    report = OrphanReport()
    for rt in loaded.runtimes:
        report.roots.append((rt.name, rt.root))
        running = rt.found.daemon_pid is not None or rt.name == "podman"
        fs = rt.orphan_facts(mounted, now, running)
        if probs:  # without the mount table, "not mounted" is not proven
            from dataclasses import replace

            fs = [replace(f, records_complete=False) for f in fs]
        facts.extend(fs)
    min_age = DEFAULT_MIN_AGE_SECONDS if min_age_seconds is None else min_age_seconds
    report.findings = classify_all(facts, min_age)
    return report, problems
