"""Render `why-missing` explanations: JSON records and text with the evidence. No I/O but the console."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ovlinspect.render.jsonout import display, problem_record, put_path
from ovlinspect.render.safe import text
from ovlinspect.render.tree import layer_label, layer_record, stack_record

if TYPE_CHECKING:
    from rich.console import Console

    from ovlinspect.analysis.lookup import Explanation
    from ovlinspect.model import LayerStack


def step_record(s: dict[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    put_path(rec, "component", s["component"])
    put_path(rec, "path", s["path"])
    rec["event"] = s["event"]
    rec["detail"] = display(s.get("detail") or "")
    lay = s.get("layer")
    if lay is None:
        rec["layer"] = None
    else:
        rec["layer"] = {"index": lay["index"], "role": lay["role"]}
        put_path(rec["layer"], "path", lay["path"])
        put_path(rec, "layer_path", s.get("layer_path"))
    if s.get("note"):
        rec["note"] = {k: display(v) for k, v in s["note"].items()}
    return rec


def explanation_record(stack: LayerStack, ex: Explanation) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    put_path(rec, "path", ex.path)
    rec["visible"] = ex.visible
    rec["verdict"] = ex.verdict
    rec["layer"] = layer_record(stack, ex.layer)
    rec["type"] = ex.kind
    rec["message"] = display(ex.message)
    if ex.assumed_verdict:
        rec["assumed_verdict"] = ex.assumed_verdict
    if ex.resolved:
        put_path(rec, "resolved", ex.resolved)
    rec["shadows"] = list(ex.shadows)
    if ex.data_layer is not None:
        rec["data_layer"] = ex.data_layer
    rec["suggestions"] = [display(s) for s in ex.suggestions]
    rec["elsewhere"] = [display(s) for s in ex.elsewhere]
    rec["steps"] = [step_record(s) for s in ex.steps]
    rec["problems"] = [problem_record(p) for p in ex.problems]
    return rec


def why_doc(stack: LayerStack, exs: list[Explanation]) -> dict[str, Any]:
    return {"stack": stack_record(stack), "results": [explanation_record(stack, ex) for ex in exs]}


_STYLE = {"visible": "green", "unknown": "yellow"}


def render_why(console: Console, stack: LayerStack, exs: list[Explanation], verbose: bool = True) -> None:
    console.print(text(stack.label, style="bold"))
    for ex in exs:
        t = text(ex.path, style="bold")
        t.append("  ")
        t.append_text(text(ex.verdict.upper(), style=_STYLE.get(ex.verdict, "red") + " bold"))
        console.print(t)
        console.print(text(f"  {ex.message}"))
        if verbose:
            for s in ex.steps:
                lay = s.get("layer")
                where = layer_label(stack, lay["index"]) if lay else "-"
                detail = f" ({s['detail']})" if s.get("detail") else ""
                console.print(text(f"    {s['path']:<30} {where:<28} {s['event']}{detail}", style="dim"))
        for p in ex.problems:
            console.print(text(f"  warning: {p.message} ({p.path})", style="yellow"))
