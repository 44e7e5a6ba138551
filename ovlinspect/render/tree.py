"""Render the offline merged view (`tree`) and the stack header shared by the layer commands. No I/O but the console."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

from ovlinspect.render.jsonout import SCHEMA_VERSION, display, problem_record, put_path
from ovlinspect.render.safe import text

if TYPE_CHECKING:
    from rich.console import Console

    from ovlinspect.analysis.merged import TreeError, TreeItem
    from ovlinspect.model import LayerStack

RICH_TREE_LIMIT = 2000  # above this many entries, text output streams as an indented list


def layer_record(stack: LayerStack, index: int | None) -> dict[str, Any] | None:
    """{"index", "role", "path"} (+ "note" from the runtime's image history) for a layer index."""
    if index is None:
        return None
    la = stack.layers[index]
    rec: dict[str, Any] = {"index": index, "role": la.role.value}
    put_path(rec, "path", la.path)
    note = stack.layer_notes.get(index)
    if note:
        rec["note"] = {k: display(v) for k, v in note.items()}
    return rec


def stack_record(stack: LayerStack) -> dict[str, Any]:
    return {
        "label": display(stack.label),
        "layers": [layer_record(stack, i) for i in range(len(stack.layers))],
        "effective": {k: v.value for k, v in stack.effective.items()},
        "xattr_prefix": stack.xattr_prefix,
    }


def layer_label(stack: LayerStack, index: int | None) -> str:
    if index is None:
        return "-"
    la = stack.layers[index]
    s = f"L{index} {la.role.value}"
    note = stack.layer_notes.get(index, {}).get("created_by")
    if note:
        s += f" ({note[:60]})"
    return s


def covered_by(stack: LayerStack, path: str) -> str | None:
    """The mount point (in the merged view) of another mount hiding `path`, if any."""
    for c in stack.covered:
        if path == c or path.startswith(c.rstrip("/") + "/"):
            return c
    return None


def item_record(stack: LayerStack, it: TreeItem) -> dict[str, Any]:
    e = it.entry
    rec: dict[str, Any] = {}
    p = "/" + "/".join(it.path)
    put_path(rec, "path", p)
    rec["type"] = e.kind
    rec["size"] = e.size
    rec["mode"] = stat.S_IMODE(e.mode)
    put_path(rec, "target", e.target)
    rec["layer"] = it.layer
    if it.data_layer is not None and it.data_layer != it.layer:
        rec["data_layer"] = it.data_layer
    if stack.covered and covered_by(stack, p):
        rec["covered_by_mount"] = covered_by(stack, p)
    return rec


def error_record(err: TreeError) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    put_path(rec, "path", "/" + "/".join(err.path))
    rec["verdict"] = err.verdict
    rec["errno"] = err.errno_name
    if err.problem is not None:
        rec["problem"] = problem_record(err.problem)
    return rec


def stream_tree_json(out: IO[str], stack: LayerStack, items: Iterable[TreeItem | TreeError], problems: list[Any]) -> tuple[int, int]:
    """Write {"schema_version", "stack", "entries": [...], "errors": [...], "problems"} entry by entry."""
    from ovlinspect.analysis.merged import TreeError

    head = json.dumps(stack_record(stack), ensure_ascii=False)
    out.write(f'{{"schema_version": {SCHEMA_VERSION}, "stack": {head}, "entries": [')
    errors: list[dict[str, Any]] = []
    n = 0
    for it in items:
        if isinstance(it, TreeError):
            errors.append(error_record(it))
            continue
        out.write(("," if n else "") + json.dumps(item_record(stack, it), ensure_ascii=False))
        n += 1
    out.write('], "errors": ' + json.dumps(errors, ensure_ascii=False))
    out.write(', "problems": ' + json.dumps([problem_record(p) for p in problems], ensure_ascii=False) + "}\n")
    return n, len(errors)


def _describe(stack: LayerStack, it: TreeItem) -> str:
    e = it.entry
    mode = stat.filemode(e.mode)
    parts = [mode, f"{e.size:>10}" if e.kind != "dir" else " " * 10, layer_label(stack, it.layer)]
    if it.data_layer is not None and it.data_layer != it.layer:
        parts.append(f"data from L{it.data_layer}")
    if stack.covered:
        c = covered_by(stack, "/" + "/".join(it.path))
        if c:
            parts.append(f"hidden by the mount on {c}")
    return "  ".join(parts)


def render_tree(console: Console, stack: LayerStack, root_label: str, items: Iterator[TreeItem | TreeError]) -> tuple[int, int]:
    """Rich tree for small views; an indented stream for big ones. Returns (entries, errors)."""
    from rich.text import Text
    from rich.tree import Tree

    from ovlinspect.analysis.merged import TreeError
    from ovlinspect.render.columns import emit_line

    console.print(text(f"{stack.label}: merged view of {root_label}", style="bold"))
    buf: list[TreeItem | TreeError] = []
    streaming = False
    n = errs = 0

    def line(it: TreeItem | TreeError, base: int) -> Text:
        if isinstance(it, TreeError):
            return text(f"{'  ' * (len(it.path) - base - 1)}{it.path[-1] if it.path else '/'}  !! {it.verdict} {it.errno_name or ''}", style="red")
        name = it.path[-1]
        t = text(name, style="bold blue" if it.entry.kind == "dir" else "")
        if it.entry.kind == "symlink":
            t.append_text(text(f" -> {it.entry.target}", style="cyan"))
        t.append("  ")
        t.append_text(text(_describe(stack, it), style="dim"))
        return t

    base = None
    for it in items:
        if isinstance(it, TreeError):
            errs += 1
        else:
            n += 1
        if base is None:
            base = len(it.path) - 1
        if streaming:
            emit_line(console, Text("  " * (len(it.path) - base - 1)) + line(it, base))
            continue
        buf.append(it)
        if len(buf) > RICH_TREE_LIMIT:
            streaming = True
            for b in buf:
                emit_line(console, Text("  " * (len(b.path) - base - 1)) + line(b, base))
            buf = []
    if not streaming:
        tree = Tree(text(root_label, style="bold"))
        nodes: dict[tuple[str, ...], Any] = {}
        for it in buf:
            parent = nodes.get(it.path[:-1], tree)
            node = parent.add(line(it, base or 0))
            nodes[it.path] = node
        console.print(tree)
    console.print(text(f"{n} entries" + (f", {errs} errors" if errs else ""), style="dim"))
    return n, errs
