"""Render btrfs metadata verdicts: rich text for people, JSON records for programs (pure)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ovlinspect.render.jsonout import problem_record, put_path, put_paths
from ovlinspect.render.safe import text

if TYPE_CHECKING:
    from rich.console import Console

    from ovlinspect.analysis.btrfs import BtrfsReport
    from ovlinspect.errors import Problem

STYLE = {"ok": "green", "warning": "yellow", "critical": "bold red", "unknown": "magenta"}

# (label, metric key) rows of the numbers table, in reading order
ROWS = (
    ("metadata total", "metadata_total_bytes"),
    ("metadata used", "metadata_used_bytes"),
    ("metadata reserved", "metadata_reserved_bytes"),
    ("metadata may_use (incl. global reserve)", "metadata_may_use_bytes"),
    ("metadata pinned", "metadata_pinned_bytes"),
    ("metadata readonly", "metadata_readonly_bytes"),
    ("global reserve", "global_reserve_bytes"),
    ("metadata free beyond global reserve", "metadata_free_bytes"),
    ("one file create reserves", "create_reservation_bytes"),
    ("warning below", "warning_threshold_bytes"),
    ("data total", "data_total_bytes"),
    ("data used", "data_used_bytes"),
    ("filesystem size", "fs_size_bytes"),
    ("allocated to chunks", "allocated_bytes"),
    ("unallocated", "unallocated_bytes"),
    ("new metadata chunks possible", "metadata_allocatable_bytes"),
    ("df available", "df_available_bytes"),
)


def human(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def report_record(r: BtrfsReport) -> dict[str, Any]:
    """One filesystem as a JSON record (stable keys; every input number; integer bytes)."""
    rec: dict[str, Any] = {
        "fsid": r.fsid,
        "label": r.label,
        "verdict": r.verdict,
        "reason": r.reason,
        "can_allocate_metadata_chunk": r.can_allocate_metadata_chunk,
        "metadata_profile": r.metadata_profile,
        "metadata_copies": r.metadata_copies,
        "data_profile": r.data_profile,
        "subvolume_count": r.subvolume_count,
        "metrics": dict(r.metrics),
        "statvfs": dict(r.statvfs) if r.statvfs else None,
        "devices": [],
        "notes": list(r.notes),
        "remedies": list(r.remedies),
    }
    put_paths(rec, "mountpoints", r.mountpoints)
    put_paths(rec, "docker_roots", r.docker_roots)
    for d in r.devices:
        drec: dict[str, Any] = {
            "devid": d.devid,
            "total_bytes": d.total_bytes,
            "used_bytes": d.used_bytes,
            "unallocated_bytes": d.unallocated_bytes,
            "missing": d.missing,
            "writeable": d.writeable,
        }
        put_path(drec, "path", d.path)
        rec["devices"].append(drec)
    put_path(rec, "source", r.source)
    return rec


def btrfs_doc(reports: list[BtrfsReport], problems: list[Problem]) -> dict[str, Any]:
    from ovlinspect.analysis.btrfs import worst_verdict

    return {
        "verdict": worst_verdict(reports) if reports else None,
        "filesystems": [report_record(r) for r in reports],
        "problems": [problem_record(p) for p in problems],
    }


def render_reports(reports: list[BtrfsReport], console: Console) -> None:
    """Human-readable: verdict and reason first, then the numbers, then what to do."""
    from rich.table import Table

    for i, r in enumerate(reports):
        if i:
            console.print()
        head = text(f"btrfs {r.fsid}")
        if r.label:
            head.append_text(text(f" ({r.label})"))
        if r.mountpoints:
            head.append_text(text(" on " + ", ".join(r.mountpoints)))
        console.print(head)
        line = text(f"{r.verdict.upper()}", STYLE.get(r.verdict, ""))
        line.append_text(text(f": {r.reason}"))
        console.print(line)
        prof = f"metadata {r.metadata_profile or 'unknown'}"
        if r.metadata_copies:
            prof += f" ({r.metadata_copies} copies)"
        prof += f", data {r.data_profile or 'unknown'}"
        cam = {True: "yes", False: "no", None: "unknown"}[r.can_allocate_metadata_chunk]
        console.print(text(f"{prof}; new metadata chunk can be allocated: {cam}"))
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("")
        table.add_column("bytes", justify="right")
        table.add_column("", justify="right")
        for label, key in ROWS:
            v = r.metrics.get(key)
            table.add_row(label, "?" if v is None else str(v), human(v))
        console.print(table)
        if r.devices:
            dt = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
            for col in ("devid", "device", "size", "allocated", "unallocated"):
                dt.add_column(col, justify="left" if col == "device" else "right")
            for d in r.devices:
                dt.add_row(str(d.devid), text(d.path or "?"), human(d.total_bytes), human(d.used_bytes), human(d.unallocated_bytes))
            console.print(dt)
        if r.docker_roots:
            console.print(text("container data roots here: " + ", ".join(r.docker_roots)))
        sub = "unknown" if r.subvolume_count is None else str(r.subvolume_count)
        console.print(text(f"layer subvolumes: {sub}"))
        for n in r.notes:
            console.print(text(f"note: {n}"))
        if r.remedies:
            console.print(text("what to do, in this order:", "bold"))
            for k, step in enumerate(r.remedies, 1):
                console.print(text(f"  {k}. {step}"))
