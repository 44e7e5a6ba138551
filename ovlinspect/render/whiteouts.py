"""Render `whiteouts`: markers per layer and lint findings, JSON and text. No I/O but the console."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ovlinspect.render.columns import emit_line
from ovlinspect.render.jsonout import display, put_path
from ovlinspect.render.safe import text
from ovlinspect.render.tree import layer_label

if TYPE_CHECKING:
    from rich.console import Console

    from ovlinspect.analysis.whiteouts import Finding, Marker
    from ovlinspect.model import LayerStack


def marker_record(m: Marker) -> dict[str, Any]:
    rec: dict[str, Any] = {"layer": m.layer}
    put_path(rec, "path", "/" + "/".join(m.path))
    rec["marker"] = m.marker
    put_path(rec, "value", m.value)
    return rec


def finding_record(f: Finding) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": f.id, "severity": f.severity.value, "layer": f.layer}
    put_path(rec, "path", "/" + "/".join(f.path))
    rec["message"] = display(f.message)
    return rec


def render_marker(console: Console, stack: LayerStack, m: Marker) -> None:
    t = text(f"{layer_label(stack, m.layer):<24} {m.marker:<15} ", style="dim")
    t.append_text(text("/" + "/".join(m.path)))
    if m.value and m.marker not in ("whiteout", "xattr_whiteout"):
        t.append_text(text(f"  = {m.value}", style="cyan"))
    emit_line(console, t)


def render_finding(console: Console, f: Finding) -> None:
    style = {"info": "blue", "warning": "yellow", "critical": "red"}[f.severity.value]
    t = text(f"  {f.severity.value}: {f.id}: ", style=style)
    t.append_text(text(f.message))
    emit_line(console, t)
