"""Render a check report as monitoring-plugin output (Nagios / Icinga / Sensu). Pure.

Line 1: `OVLINSPECT <STATUS> - <summary> | <perfdata>`; then one line per finding (long output).
Perfdata follows the Monitoring Plugins guidelines: 'label'=value[UOM];warn;crit;min;max, with
`N:` ranges ("alert below N") for free space. Labels may not contain `'` or `=`: replaced by `_`.
https://www.monitoring-plugins.org/doc/guidelines.html#AEN200
"""

from __future__ import annotations

from ovlinspect.analysis.checks import CheckReport, Status
from ovlinspect.render.jsonout import display
from ovlinspect.render.safe import escape_untrusted


def _label(s: str) -> str:
    s = display(s).replace("'", "_").replace("=", "_").replace("|", "_")
    return "'" + escape_untrusted(s) + "'"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.2f}"


def _clean(s: str) -> str:
    # '|' starts perfdata in the plugin protocol: never let a message contain one
    return escape_untrusted(s).replace("|", "/")


def perfdata(report: CheckReport) -> list[str]:
    out: list[str] = []
    params = {r.id: r.params for r in report.results if r.enabled}
    metrics = {(m.name, m.labels): m.value for r in report.results if r.enabled for m in r.metrics}
    if "fs_free_space" in params:
        p = params["fs_free_space"]
        for (name, labels), v in metrics.items():
            if name == "ovlinspect_filesystem_avail_bytes":
                fs = dict(labels)["filesystem"]
                size = metrics.get(("ovlinspect_filesystem_size_bytes", labels), 0)
                pct = 100.0 * v / size if size else 100.0
                out.append(f"{_label('free ' + fs)}={pct:.2f}%;{_num(p['warning_percent'])}:;{_num(p['critical_percent'])}:;0;100")
    if "fs_free_inodes" in params:
        p = params["fs_free_inodes"]
        for (name, labels), v in metrics.items():
            if name == "ovlinspect_filesystem_inodes_free":
                fs = dict(labels)["filesystem"]
                total = metrics.get(("ovlinspect_filesystem_inodes", labels), 0)
                if total:
                    out.append(f"{_label('inodes free ' + fs)}={100.0 * v / total:.2f}%;{_num(p['warning_percent'])}:;"
                               f"{_num(p['critical_percent'])}:;0;100")
    for (name, labels), v in metrics.items():
        if name == "ovlinspect_overlay_lower_layers_max" and "lower_layers" in params:
            p = params["lower_layers"]
            out.append(f"'lower_layers_max'={_num(v)};{_num(p['warning_layers'])};{_num(p['critical_layers'])};0;")
        elif name == "ovlinspect_overlay_mounts":
            out.append(f"'overlay_mounts'={_num(v)};;;0;")
        elif name == "ovlinspect_overlay_missing_layers":
            out.append(f"'missing_layers'={_num(v)};;0;0;")
        elif name == "ovlinspect_orphan_bytes" and "orphan_bytes" in params:
            p = params["orphan_bytes"]
            w = _num(p["warning_bytes"]) if p["warning_bytes"] else ""
            c = _num(p["critical_bytes"]) if p["critical_bytes"] else ""
            out.append(f"{_label('orphan ' + dict(labels)['runtime'])}={_num(v)}B;{w};{c};0;")
    out.append(f"'duration'={report.duration_seconds:.3f}s;;;0;")
    return out


def render_nagios(report: CheckReport) -> str:
    bad = [f for f in report.findings if f.status is not Status.OK]
    bad.sort(key=lambda f: {Status.CRITICAL: 0, Status.WARNING: 1, Status.UNKNOWN: 2}.get(f.status, 3))
    unknown_checks = [r for r in report.results if r.enabled and r.status is Status.UNKNOWN and not r.findings]
    if not bad and not unknown_checks:
        enabled = sum(1 for r in report.results if r.enabled)
        summary = f"{enabled} checks OK"
    else:
        parts = [f"{f.check} {f.where}: {f.what}" for f in bad[:1]] or [f"{r.id}: {r.summary}" for r in unknown_checks[:1]]
        more = len(bad) + len(unknown_checks) - 1
        summary = parts[0] + (f" (+{more} more)" if more > 0 else "")
    head = f"OVLINSPECT {report.status.name} - {_clean(summary)} | {' '.join(perfdata(report))}"
    lines = [head]
    for f in bad:
        lines.append(_clean(f"{f.status.name} {f.check}: {f.where}: {f.what}" + (f" -> {f.todo}" if f.todo else "")))
    for r in unknown_checks:
        lines.append(_clean(f"UNKNOWN {r.id}: {r.summary}"))
    return "\n".join(lines) + "\n"
