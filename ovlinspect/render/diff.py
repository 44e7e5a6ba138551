"""Render `diff` (what the top layer changes): JSON records and docker-diff-like text. No I/O but the console."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ovlinspect.render.columns import emit_line
from ovlinspect.render.jsonout import display, put_path
from ovlinspect.render.safe import text

if TYPE_CHECKING:
    from rich.console import Console

    from ovlinspect.analysis.merged import Change

LETTER = {"added": "A", "changed": "C", "deleted": "D"}


def change_record(c: Change) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    put_path(rec, "path", "/" + "/".join(c.path))
    rec["change"] = c.change
    rec["how"] = c.how
    rec["type"] = c.kind
    rec["layer"] = c.layer
    rec["detail"] = display(c.detail)
    return rec


def render_change(console: Console, c: Change) -> None:
    style = {"added": "green", "changed": "yellow", "deleted": "red"}[c.change]
    t = text(f"{LETTER[c.change]} ", style=style + " bold")
    t.append_text(text("/" + "/".join(c.path)))
    t.append_text(text(f"  [{c.how}]" + (f" {c.detail}" if c.detail else ""), style="dim"))
    emit_line(console, t)
