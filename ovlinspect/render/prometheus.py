"""Render a check report in the Prometheus text exposition format (version 0.0.4). Pure.

Every family has # HELP and # TYPE (all gauges); names carry the `ovlinspect_` prefix and their
unit; label values are escaped as the format requires (backslash, double quote, newline) and
non-UTF-8 bytes of paths become U+FFFD (the format is UTF-8).
See https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

import math

from ovlinspect.analysis.checks import METRIC_HELP, CheckReport, Status
from ovlinspect.render.jsonout import display

RUN_HELP = {
    "ovlinspect_check_status": "Status of each enabled check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (could not run).",
    "ovlinspect_finding_status": "Status of each non-OK finding, labelled with where it is (filesystem, mount or runtime).",
    "ovlinspect_status": "Overall status of the run (the exit code): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
    "ovlinspect_last_run_timestamp_seconds": "Unix time the last `ovlinspect check` run started.",
    "ovlinspect_last_run_duration_seconds": "How long the last `ovlinspect check` run took.",
}


def escape_label_value(v: str) -> str:
    """Exposition format label value: \\ -> \\\\, \" -> \\\", newline -> \\n (and valid UTF-8)."""
    return display(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _fmt_value(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if float(v).is_integer() and abs(v) < 2**53 else repr(float(v))


def _series(name: str, labels: tuple[tuple[str, str], ...], value: float) -> str:
    if not labels:
        return f"{name} {_fmt_value(value)}"
    inner = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels)
    return f"{name}{{{inner}}} {_fmt_value(value)}"


def render_prometheus(report: CheckReport) -> str:
    fams: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}

    def put(name: str, labels: tuple[tuple[str, str], ...], value: float) -> None:
        fams.setdefault(name, {})[labels] = value  # a duplicate label set keeps the last value

    for r in report.results:
        if not r.enabled:
            continue
        put("ovlinspect_check_status", (("check", r.id),), int(r.status))
        for f in r.findings:
            if f.status is Status.OK:
                continue
            labels = (("check", f.check),) + tuple(sorted((k, v) for k, v in f.labels.items()))
            prev = fams.get("ovlinspect_finding_status", {}).get(labels, 0)
            put("ovlinspect_finding_status", labels, max(int(f.status), int(prev)))
        for m in r.metrics:
            put(m.name, m.labels, m.value)
    put("ovlinspect_status", (), int(report.status))
    put("ovlinspect_last_run_timestamp_seconds", (), round(report.timestamp_seconds, 3))
    put("ovlinspect_last_run_duration_seconds", (), round(report.duration_seconds, 6))
    out: list[str] = []
    for name, series in fams.items():
        help_ = RUN_HELP.get(name) or METRIC_HELP.get(name) or f"{name} (raw number from the btrfs analysis)."
        out.append(f"# HELP {name} {escape_help(help_)}")
        out.append(f"# TYPE {name} gauge")
        for labels, value in series.items():
            out.append(_series(name, labels, value))
    return "\n".join(out) + "\n"
