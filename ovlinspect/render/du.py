"""Render `ovlinspect du`: JSON records (schema_version 1) and rich tables. No I/O but the console."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ovlinspect.render.jsonout import display, problem_record, put_path
from ovlinspect.render.safe import text

if TYPE_CHECKING:
    from rich.console import Console

    from ovlinspect.analysis.usage import DuReport, LayerRow
    from ovlinspect.model import ShadowUsage, TreeUsage
    from ovlinspect.render.columns import Cell

_USAGE_KEYS = ("apparent_bytes", "allocated_bytes", "files", "dirs", "symlinks", "whiteouts", "opaque_dirs", "other", "inodes", "skipped_mounts")
_SHADOW_KEYS = (
    "hidden_entries",
    "hidden_apparent_bytes",
    "hidden_allocated_bytes",
    "copy_up_files",
    "copy_up_apparent_bytes",
    "copy_up_allocated_bytes",
    "metacopy_files",
    "same_size_files",
    "identical_files",
    "identical_allocated_bytes",
)


def _usage_fields(u: TreeUsage) -> dict[str, Any]:
    return {k: getattr(u, k) for k in _USAGE_KEYS}


def shadow_record(s: ShadowUsage | None, target: int | None) -> dict[str, Any] | None:
    if s is None:
        return None
    rec: dict[str, Any] = {k: getattr(s, k) for k in _SHADOW_KEYS}
    rec["target"] = target
    return rec


def layer_record(r: LayerRow) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    put_path(rec, "path", r.path)
    rec["role"] = r.role.value
    rec["index"] = r.index
    rec.update(_usage_fields(r.usage))
    rec["shared_by"] = r.shared_by
    rec["used_by"] = list(r.used_by)
    rec["complete"] = r.usage.complete
    rec["shadow"] = shadow_record(r.shadow, r.shadow_target)
    top = []
    for t in r.usage.top:
        tr: dict[str, Any] = {}
        put_path(tr, "path", t.path)
        tr["apparent_bytes"] = t.apparent_bytes
        tr["allocated_bytes"] = t.allocated_bytes
        top.append(tr)
    rec["top"] = top
    return rec


def du_doc(report: DuReport) -> dict[str, Any]:
    """The --json document: layers (distinct dirs), targets, totals, problems."""
    t = report.totals
    totals: dict[str, Any] = {"layers": t.layers}
    totals.update(t.counts)
    totals.update(
        {
            "unique_apparent_bytes": t.unique_apparent_bytes,
            "unique_allocated_bytes": t.unique_allocated_bytes,
            "shared_apparent_bytes": t.shared_apparent_bytes,
            "shared_allocated_bytes": t.shared_allocated_bytes,
            "hidden_apparent_bytes": t.hidden_apparent_bytes,
            "hidden_allocated_bytes": t.hidden_allocated_bytes,
            "copy_up_allocated_bytes": t.copy_up_allocated_bytes,
            "complete": t.complete,
        }
    )
    targets = []
    for tr in report.targets:
        targets.append(
            {
                "label": display(tr.label),
                "layers": list(tr.layer_keys),
                "apparent_bytes": tr.apparent_bytes,
                "allocated_bytes": tr.allocated_bytes,
                "unique_apparent_bytes": tr.unique_apparent_bytes,
                "unique_allocated_bytes": tr.unique_allocated_bytes,
                "shared_apparent_bytes": tr.shared_apparent_bytes,
                "shared_allocated_bytes": tr.shared_allocated_bytes,
                "complete": tr.complete,
            }
        )
    return {
        "layers": [layer_record(r) for r in report.layers],
        "targets": targets,
        "totals": totals,
        "problems": [problem_record(p) for p in report.problems],
    }


def human(n: int | None, exact: bool = False) -> str:
    """Bytes for people: 1024-based units, one decimal (`--bytes`: the exact integer)."""
    if n is None:
        return "-"
    if exact:
        return str(n)
    v = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or unit == "TiB":
            return f"{int(v)} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return str(n)


def render_du(report: DuReport, console: Console, per_layer: bool, exact: bool = False) -> None:
    """Per-layer table (with --per-layer), then one line per target, then totals."""
    from ovlinspect.render.columns import Column, print_columns

    if not report.targets:
        console.print(text("no overlay layers found"))
        return

    if per_layer:
        shadows = any(r.shadow is not None for r in report.layers)
        cols = [Column("#", "right"), Column("ROLE")]
        cols += [Column(c, "right") for c in ("APPARENT", "ALLOCATED", "FILES", "DIRS", "LINKS", "WH", "OPQ", "INODES", "SHARED")]
        if shadows:
            cols += [Column("HIDDEN", "right"), Column("COPY-UP", "right")]
        cols.append(Column("PATH", fold=True))
        rows: list[list[Cell]] = []
        for r in report.layers:
            u = r.usage
            cells: list[Cell] = [
                str(r.index), r.role.value, human(u.apparent_bytes, exact), human(u.allocated_bytes, exact),
                str(u.files), str(u.dirs), str(u.symlinks), str(u.whiteouts), str(u.opaque_dirs), str(u.inodes), str(r.shared_by),
            ]
            if shadows:
                s = r.shadow
                cells.append(human(s.hidden_allocated_bytes, exact) if s else "-")
                cells.append(f"{human(s.copy_up_allocated_bytes, exact)} ({s.copy_up_files})" if s else "-")
            cells.append(r.path + ("" if u.complete else "  [incomplete]"))
            rows.append(cells)
        print_columns(console, cols, rows)
        for r in report.layers:
            if r.usage.top:
                console.print(text(f"largest files in layer {r.index} ({r.path}):"))
                for tf in r.usage.top:
                    console.print(text(f"  {human(tf.apparent_bytes, exact):>10}  {human(tf.allocated_bytes, exact):>10}  {tf.path}"))
            s = r.shadow
            if s and (s.metacopy_files or s.same_size_files or s.identical_files):
                ident = "" if s.identical_files is None else f", {s.identical_files} identical content ({human(s.identical_allocated_bytes, exact)})"
                console.print(
                    text(f"layer {r.index}: {s.copy_up_files} copy-ups, {s.metacopy_files} metacopy (metadata-only), {s.same_size_files} same size{ident}")
                )
        console.print()
    tcols = [Column(c, "right") for c in ("APPARENT", "ALLOCATED", "UNIQUE", "SHARED", "LAYERS")] + [Column("TARGET", fold=True)]
    trows: list[list[Cell]] = []
    for tr in report.targets:
        trows.append(
            [
                human(tr.apparent_bytes, exact),
                human(tr.allocated_bytes, exact),
                human(tr.unique_allocated_bytes, exact),
                human(tr.shared_allocated_bytes, exact),
                str(len(tr.layer_keys)),
                tr.label + ("" if tr.complete else "  [incomplete]"),
            ]
        )
    t = report.totals
    if len(report.targets) > 1 or per_layer:
        trows.append(
            [
                human(t.counts["apparent_bytes"], exact),
                human(t.counts["allocated_bytes"], exact),
                human(t.unique_allocated_bytes, exact),
                human(t.shared_allocated_bytes, exact),
                str(t.layers),
                "total (distinct layers)",
            ]
        )
    print_columns(console, tcols, trows)
    if t.hidden_allocated_bytes is not None:
        console.print(
            text(f"hidden by higher layers: {human(t.hidden_allocated_bytes, exact)} allocated; copy-up copies: {human(t.copy_up_allocated_bytes, exact)}")
        )
