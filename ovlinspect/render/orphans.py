"""Render `ovlinspect orphans`: JSON records, a rich table, the clean-up script. No I/O but the console."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ovlinspect.analysis.orphans import OrphanFinding, OrphanReport
from ovlinspect.render.jsonout import problem_record, put_path, put_paths
from ovlinspect.render.safe import text

if TYPE_CHECKING:
    from rich.console import Console


def finding_record(f: OrphanFinding) -> dict[str, Any]:
    rec: dict[str, Any] = {"runtime": f.runtime}
    put_path(rec, "root", f.root)
    put_path(rec, "path", f.path)
    rec.update({"kind": f.kind, "verdict": f.verdict, "reason": f.reason, "size_bytes": f.size_bytes})
    rec["age_seconds"] = int(f.age_seconds) if f.age_seconds is not None else None
    put_paths(rec, "also", list(f.also))
    return rec


def orphans_doc(report: OrphanReport, problems: list[Any]) -> dict[str, Any]:
    return {
        "roots": [{"runtime": rt, "root": r} for rt, r in report.roots],
        "orphans": [finding_record(f) for f in report.orphans],
        "unknown": [finding_record(f) for f in report.unknown],
        "orphan_bytes": report.orphan_bytes,
        "problems": [problem_record(p) for p in problems],
    }


def human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    v = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if v < 1024 or unit == "TiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{n} B"


def human_age(s: float | None) -> str:
    if s is None:
        return "?"
    for div, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if s >= div:
            return f"{s / div:.0f}{unit}"
    return f"{s:.0f}s"


def render_orphans(report: OrphanReport, console: Console) -> None:
    from rich.table import Table

    if not report.roots:
        console.print(text("no container runtime data roots found"))
        return
    roots = ", ".join(f"{rt} {r}" for rt, r in report.roots)
    if not report.findings:
        console.print(text(f"no orphans ({roots})"))
        return
    t = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("VERDICT", "RUNTIME", "KIND", "SIZE", "AGE", "PATH", "WHY"):
        t.add_column(col, overflow="fold", justify="right" if col in ("SIZE", "AGE") else "left")
    for f in report.findings:
        style = "bold red" if f.verdict == "orphan" else "yellow"
        path = f.path + "".join(f"\n  + {a}" for a in f.also)
        t.add_row(text(f.verdict, style=style), text(f.runtime), text(f.kind), text(human_bytes(f.size_bytes)), text(human_age(f.age_seconds)), text(path), text(f.reason))
    console.print(t)
    console.print(
        text(
            f"{len(report.orphans)} orphans, {human_bytes(report.orphan_bytes)} ({report.orphan_bytes} bytes); "
            f"{len(report.unknown)} unknown (never removed by --script). Examined: {roots}"
        )
    )
