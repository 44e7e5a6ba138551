"""Gather the host's overlay mounts: read mountinfo (via hostfs), parse, assess, attach owners.

This is the seam between I/O (hostfs) and the pure parsers/analyses; commands call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ovlinspect import hostfs
from ovlinspect.analysis.mounts import AssessMemo, assess_or_problem, is_overlay
from ovlinspect.errors import Problem
from ovlinspect.model import MountEntry, Namespace, OverlayMount
from ovlinspect.mountinfo import parse_mountinfo


@dataclass
class MountInventory:
    mounts: list[OverlayMount] = field(default_factory=list)
    all_entries: dict[str, list[MountEntry]] = field(default_factory=dict)  # ns id -> every mount
    problems: list[Problem] = field(default_factory=list)
    namespaces: list[Namespace] = field(default_factory=list)


def _collect(
    data: bytes, ns: Namespace | None, probe: hostfs.HostProbe, params: dict[str, str], inv: MountInventory, memo: AssessMemo
) -> None:
    entries, problems = parse_mountinfo(data)
    inv.problems.extend(problems)
    inv.all_entries[ns.ns_id if ns else ""] = entries
    for e in entries:
        if not is_overlay(e):
            continue
        m, prob = assess_or_problem(e, probe, params, ns, memo)
        if prob:
            inv.problems.append(prob)
        if m:
            inv.mounts.append(m)


def collect_mounts(roots: hostfs.HostRoots, all_namespaces: bool = False, check_paths: bool | None = None) -> MountInventory:
    """Every overlay mount of this namespace (or of every namespace). Raises on unreadable input.

    check_paths: probe layer paths on this host; default True live, False when replaying.
    """
    inv = MountInventory()
    params = hostfs.read_module_params(roots)
    probe = hostfs.HostProbe(enabled=(not roots.replay) if check_paths is None else check_paths)
    memo = AssessMemo()
    if not all_namespaces or roots.replay:
        if all_namespaces:
            inv.problems.append(Problem("ignored", "--all-namespaces ignored when replaying a mountinfo file"))
        _collect(hostfs.read_mountinfo(roots), None, probe, params, inv, memo)
    else:
        scan = hostfs.scan_mount_namespaces(roots)
        inv.problems.extend(scan.problems)
        for ns, pids in scan.namespaces:
            data, pid, prob = hostfs.read_namespace_mountinfo(roots, pids)
            if data is None:
                if prob:
                    inv.problems.append(
                        Problem(prob.kind, f"namespace {ns.ns_id}: every process vanished or was unreadable", prob.path)
                    )
                continue
            seen_ns = Namespace(ns.ns_id, pid, ns.comm if pid == ns.pid else None)
            inv.namespaces.append(seen_ns)
            _collect(data, seen_ns, probe, params, inv, memo)
    from ovlinspect.runtimes import attach_owners

    inv.mounts = attach_owners(inv.mounts, roots)
    return inv
