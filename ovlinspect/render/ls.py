"""Render the mount inventory (`ovlinspect ls`): JSON records and rich tables. No I/O but the console."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ovlinspect.analysis.mounts import state_words
from ovlinspect.model import Layer, LayerRole, OverlayMount
from ovlinspect.render.jsonout import SCHEMA_VERSION, display, problem_record, put_path, put_paths
from ovlinspect.render.safe import text

if TYPE_CHECKING:
    from rich.console import Console

    from ovlinspect.inventory import MountInventory
    from ovlinspect.render.columns import Cell


def owner_record(m: OverlayMount) -> dict[str, Any] | None:
    o = m.owner
    if o is None:
        return None
    return {
        "runtime": o.runtime,
        "container_id": o.container_id,
        "container_name": o.container_name,
        "image_ref": o.image_ref,
        "image_id": o.image_id,
        "details": dict(o.details),
    }


def owner_label(m: OverlayMount) -> str:
    o = m.owner
    if o is None:
        return "-"
    who = o.container_name or (o.container_id[:12] if o.container_id else "")
    img = f" ({o.image_ref})" if o.image_ref else ""
    return f"{o.runtime}:{who}{img}"


def layer_record(la: Layer) -> dict[str, Any]:
    w, p, how = la.written, la.path, la.resolution
    if w.isascii() and p.isascii() and how.isascii():  # the common case, without the per-field helpers
        return {
            "index": la.index,
            "role": la.role._value_,
            "written": w,
            "path": p,
            "resolved": la.resolved,
            "exists": la.exists,
            "resolution": how,
            "identity": dict(la.identity),
        }
    return layer_record_general(la)


def layer_record_general(la: Layer) -> dict[str, Any]:
    """layer_record for any names (non-UTF-8 ones get their `_b64` twins); the same keys in the same order."""
    lr: dict[str, Any] = {"index": la.index, "role": la.role.value}
    put_path(lr, "written", la.written)
    put_path(lr, "path", la.path)
    lr.update({"resolved": la.resolved, "exists": la.exists, "resolution": display(la.resolution)})
    lr["identity"] = dict(la.identity)
    return lr


def dirs_record(m: OverlayMount) -> dict[str, Any]:
    """`lowerdirs` and `datadirs` (with their `_b64` twins when needed): they depend on the chain only."""
    rec: dict[str, Any] = {}
    put_paths(rec, "lowerdirs", [la.path for la in m.lowers])
    put_paths(rec, "datadirs", [la.path for la in m.datas])
    return rec


def mount_record(m: OverlayMount, layers: bool = True, dirs: dict[str, Any] | None = None) -> dict[str, Any]:
    """One mount's `ls --json` record; `layers` (the per-layer records) comes last.

    `dirs`: dirs_record(m), when the caller already has it (inventory_json shares it between mounts)."""
    e = m.entry
    rec: dict[str, Any] = {"mount_id": e.mount_id, "parent_id": e.parent_id, "device": f"{e.major}:{e.minor}"}
    put_path(rec, "mountpoint", e.mountpoint)
    put_path(rec, "root", e.root)
    rec["fstype"] = e.fstype
    rec["source"] = display(e.source)
    rec["mount_options"] = display(e.mount_options)
    rec["optional_fields"] = [display(f) for f in e.optional_fields]
    rec["namespace"] = (
        {"id": m.namespace.ns_id, "pid": m.namespace.pid, "comm": m.namespace.comm} if m.namespace else None
    )
    up = m.upper
    put_path(rec, "upperdir", up.path if up else None)
    spec = m.spec
    put_path(rec, "workdir", m.workdir)
    rec.update(dirs_record(m) if dirs is None else dirs)
    rec["api"] = spec.api if spec else None
    rec["options"] = {display(k): (display(v) if v is not None else None) for k, v in (spec.options.items() if spec else [])}
    rec["effective"] = {k: v.value for k, v in m.effective.items()}
    rec["effective_source"] = {k: v.source for k, v in m.effective.items()}
    rec["state"] = state_words(m)
    rec["flags"] = [{"id": f.id, "severity": f.severity.value, "message": display(f.message)} for f in m.flags]
    rec["owner"] = owner_record(m)
    rec["problems"] = [problem_record(p) for p in m.problems]
    if layers:
        rec["layers"] = [layer_record(la) for la in m.layers]
    return rec


def inventory_doc(inv: MountInventory) -> dict[str, Any]:
    return {
        "mounts": [mount_record(m) for m in inv.mounts],
        "namespaces": [{"id": n.ns_id, "pid": n.pid, "comm": n.comm} for n in inv.namespaces],
        "problems": [problem_record(p) for p in inv.problems],
    }


def inventory_json(inv: MountInventory) -> str:
    """`dumps(inventory_doc(inv))`, built faster, equal to it byte for byte, key order included
    (tests/test_ls_json_fast.py).

    The containers of one image share their lower chain, and the assessment (and the runtime
    adapters) share its Layer objects: the chain's part of a record (`lowerdirs`, `datadirs` and
    the chain's layer records, encoded) is made once per distinct chain and spliced into each
    mount that has it. A mount's own part is encoded in one call, its upper layer's record with it.
    """
    enc = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps' defaults, as jsonout.dumps uses
    # chain (the ids of its Layers, which `inv` keeps alive meanwhile) -> (dirs record, encoded layer records)
    chains: dict[tuple[int, ...], tuple[dict[str, Any], str]] = {}
    mounts = []
    for m in inv.mounts:
        own = m.layers[:1] if m.layers and m.layers[0].role is LayerRole.UPPER else ()
        chain = m.layers[len(own) :]
        key = tuple(map(id, chain))
        hit = chains.get(key)
        if hit is None:
            hit = chains[key] = (dirs_record(m), enc([layer_record(la) for la in chain])[1:-1])
        dirs, chain_json = hit
        rec = mount_record(m, layers=False, dirs=dirs)
        rec["layers"] = [layer_record(la) for la in own]
        body = enc(rec)  # ends with `"layers": [<own>]}`
        if chain_json:
            body = body[:-2] + (", " if own else "") + chain_json + "]}"
        mounts.append(body)
    rest = enc(
        {
            "namespaces": [{"id": n.ns_id, "pid": n.pid, "comm": n.comm} for n in inv.namespaces],
            "problems": [problem_record(p) for p in inv.problems],
        }
    )
    return f'{{"schema_version": {SCHEMA_VERSION}, "mounts": [' + ", ".join(mounts) + "], " + rest[1:]


_SEV_STYLE = {"info": "cyan", "warning": "yellow", "critical": "bold red"}


def render_inventory(inv: MountInventory, console: Console, long: bool = False, show_ns: bool = False) -> None:
    from ovlinspect.render.columns import Column, print_columns

    if not inv.mounts:
        console.print(text("no overlay mounts found"))
        return
    cols = [Column("ID", "right")]
    if show_ns:
        cols.append(Column("NAMESPACE (PID)"))
    cols += [Column("MOUNTPOINT", fold=True), Column("OWNER", fold=True), Column("LOWERS", "right"), Column("UPPER", fold=True)]
    cols += [Column("STATE"), Column("FLAGS")]
    rows = []
    for m in inv.mounts:
        row: list[Cell] = [str(m.entry.mount_id)]
        if show_ns:
            ns = m.namespace
            row.append(f"{ns.ns_id} ({ns.pid})" if ns else "-")
        up = m.upper
        worst = max((f.severity.value for f in m.flags), key=["info", "warning", "critical"].index, default=None)
        row += [
            m.entry.mountpoint,
            owner_label(m),
            str(len(m.lowers)) if m.spec else "?",
            up.path if up else "-",
            ",".join(state_words(m)) or "-",
            (",".join(f.id for f in m.flags) or "ok", _SEV_STYLE.get(worst or "", "green")),
        ]
        rows.append(row)
    print_columns(console, cols, rows)
    if long:
        for m in inv.mounts:
            _render_layers(m, console)
    flagged = [(m, f) for m in inv.mounts for f in m.flags]
    if flagged:
        console.print()
        for m, f in flagged:
            line = text(f"mount {m.entry.mount_id} {m.entry.mountpoint}: ")
            line.append(text(f.severity.value, style=_SEV_STYLE[f.severity.value]))
            line.append(text(f": {f.message}"))
            console.print(line)


def _render_layers(m: OverlayMount, console: Console) -> None:
    from ovlinspect.render.columns import Column, print_columns

    console.print()
    console.print(text(f"mount {m.entry.mount_id} {m.entry.mountpoint}", style="bold"))
    if m.spec is None:
        console.print(text("  layers not shown in mountinfo (fuse-overlayfs)"))
        return
    cols = [Column("POS"), Column("ROLE"), Column("WRITTEN", fold=True), Column("RESOLVED", fold=True), Column("EXISTS")]
    rows: list[list[Cell]] = []
    for la in m.layers:
        ex = {True: "yes", False: "MISSING", None: "?"}[la.exists]
        rows.append(
            [
                str(la.index),
                la.role.value,
                la.written,
                la.path if la.resolved else f"(unresolved) {la.resolution}",
                (ex, "bold red" if la.exists is False else ""),
            ]
        )
    print_columns(console, cols, rows)
    eff = ", ".join(f"{k}={v.value}" + ("" if v.source == "mount" else "*") for k, v in m.effective.items())
    console.print(text(f"  effective: {eff}   (* = default, not in mountinfo)"))
