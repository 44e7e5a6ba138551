"""Classify runtime dirs as orphan / unknown from facts gathered on disk (pure; no I/O).

The rule that matters: a false "orphan" destroys data. A dir is an orphan only when every record
that could reference it was read, nothing references it, it is not mounted, it has the runtime's
own shape, and (while the runtime's daemon runs) it is older than the in-progress grace period.
Anything else that nothing is known to reference is "unknown", never "orphan".
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

ORPHAN = "orphan"
UNKNOWN = "unknown"

# Why a dir exists, as gathered by ovlinspect/runtimes/*: these kinds name the runtime's own debris.
KIND_LAYER = "layer-dir"  # a layer dir that nothing references
KIND_REMOVING = "removing"  # `<id>-removing` residue of an interrupted delete
KIND_LAYERDB_REMOVING = "layerdb-removing"  # Docker layerdb `<chain>-<rand>-removing` entry
KIND_DANGLING_LINK = "dangling-link"  # an l/ link whose target is gone
KIND_MERGED = "leftover-merged"  # an empty `merged/` mount point of a layer that is not mounted
KIND_TEMP = "temp-dir"  # containerd `new-*` snapshot temp dirs, layerdb tmp write sets
KIND_UNUSED_LAYER = "unused-layer"  # recorded by the runtime, but no image or container uses it
KIND_STRAY = "stray"  # something in the runtime's dir that does not look like its own


@dataclass(frozen=True)
class DirFacts:
    """What the runtime readers found out about one path under a runtime's storage dir."""

    runtime: str
    root: str
    path: str
    kind: str
    references: tuple[str, ...] = ()  # why it is in use; empty = nothing known references it
    mounted: bool = False
    records_complete: bool = True  # every record that could reference it was read
    age_seconds: float | None = None  # since the last change of the dir itself
    size_bytes: int | None = None  # allocated bytes (st_blocks * 512), hard links counted once
    daemon_running: bool = False
    also: tuple[str, ...] = ()  # paths that go with it (its l/ link, its layerdb entry)
    note: str = ""  # what the reader knows about it (e.g. "layerdb entry …-removing names it")
    is_dir: bool = True
    empty_dir_only: bool = False  # clean-up is `rmdir` (fails safely when not empty)


@dataclass(frozen=True)
class OrphanFinding:
    runtime: str
    root: str
    path: str
    kind: str
    verdict: str  # ORPHAN | UNKNOWN
    reason: str
    size_bytes: int | None
    age_seconds: float | None
    also: tuple[str, ...] = ()
    is_dir: bool = True
    empty_dir_only: bool = False


@dataclass
class OrphanReport:
    findings: list[OrphanFinding] = field(default_factory=list)
    roots: list[tuple[str, str]] = field(default_factory=list)  # (runtime, root) examined

    @property
    def orphans(self) -> list[OrphanFinding]:
        return [f for f in self.findings if f.verdict == ORPHAN]

    @property
    def unknown(self) -> list[OrphanFinding]:
        return [f for f in self.findings if f.verdict == UNKNOWN]

    @property
    def orphan_bytes(self) -> int:
        return sum(f.size_bytes or 0 for f in self.orphans)


_REASONS = {
    KIND_LAYER: "no record references this layer dir, and it is not mounted",
    KIND_REMOVING: "residue of an interrupted delete (`-removing`), not mounted",
    KIND_LAYERDB_REMOVING: "layerdb entry of a layer whose deletion was interrupted",
    KIND_DANGLING_LINK: "l/ link whose target layer dir is gone",
    KIND_MERGED: "empty mount point left behind by a layer that is not mounted",
    KIND_TEMP: "temporary dir of an interrupted operation",
}


def classify(f: DirFacts, min_age_seconds: float = 0.0) -> OrphanFinding | None:
    """None when the path is in use; else an orphan, or unknown when it cannot be proven unused."""
    if f.references or f.mounted:
        return None

    def out(verdict: str, reason: str) -> OrphanFinding:
        why = reason + (f"; {f.note}" if f.note else "")
        return OrphanFinding(f.runtime, f.root, f.path, f.kind, verdict, why, f.size_bytes, f.age_seconds, f.also, f.is_dir, f.empty_dir_only)

    if not f.records_complete:
        return out(UNKNOWN, "some of the runtime's records could not be read, so a reference may have been missed")
    if f.kind == KIND_STRAY:
        return out(UNKNOWN, "does not look like anything this runtime creates")
    if f.kind == KIND_UNUSED_LAYER:
        return out(UNKNOWN, "the runtime still records this layer though no image or container uses it: remove it through the runtime")
    if f.daemon_running and (f.age_seconds is None or f.age_seconds < min_age_seconds):
        return out(UNKNOWN, f"changed less than {int(min_age_seconds)} s ago while the daemon runs: may be in progress")
    reason = _REASONS.get(f.kind)
    if reason is None:
        return out(UNKNOWN, f"unrecognised kind {f.kind!r}")
    return out(ORPHAN, reason)


def classify_all(facts: list[DirFacts], min_age_seconds: float = 0.0) -> list[OrphanFinding]:
    out = []
    for f in facts:
        r = classify(f, min_age_seconds)
        if r is not None:
            out.append(r)
    return sorted(out, key=lambda r: (r.runtime, r.root, r.verdict, r.path))


def _q(path: str) -> str:
    return shlex.quote(path)


def cleanup_script(report: OrphanReport) -> str:
    """A reviewable POSIX shell script removing the orphans (never the unknowns). Pure text."""
    lines = [
        "#!/bin/sh",
        "# Written by `ovlinspect orphans --script`. REVIEW EVERY LINE before running it.",
        "# Stop the container daemons first (a layer can be created between this listing and the run).",
        "# Nothing listed as 'unknown' is removed here.",
        "set -u",
    ]
    total = 0
    for f in report.orphans:
        total += f.size_bytes or 0
        lines.append("")
        lines.append(f"# {f.runtime} {f.kind}: {f.reason}".replace("\n", " "))
        if f.size_bytes is not None:
            lines.append(f"# {f.size_bytes} bytes allocated")
        if f.empty_dir_only:
            lines.append(f"rmdir -- {_q(f.path)}")
        elif f.is_dir:
            lines.append(f"rm -rf --one-file-system -- {_q(f.path)}")
        else:
            lines.append(f"rm -f -- {_q(f.path)}")
        for extra in f.also:
            lines.append(f"rm -rf --one-file-system -- {_q(extra)}")
    lines.append("")
    lines.append(f"# {len(report.orphans)} orphans, {total} bytes; {len(report.unknown)} unknown left alone")
    return "\n".join(lines) + "\n"
