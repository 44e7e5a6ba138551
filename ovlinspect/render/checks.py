"""Render a check report as text lines (what, where, what to do) or a JSON document. Pure.

Text is silent when everything is OK (cron mails only on trouble) unless verbose; every string
coming from the host (paths, messages quoting them) goes through escape_untrusted.
"""

from __future__ import annotations

from typing import Any

from ovlinspect.analysis.checks import CheckReport, Status
from ovlinspect.render.jsonout import display
from ovlinspect.render.safe import escape_untrusted


def text_lines(report: CheckReport, verbose: bool = False) -> list[str]:
    """One line per finding; with verbose, also one line per check (OK and disabled ones too)."""
    lines: list[str] = []
    for r in report.results:
        if not r.enabled:
            if verbose:
                lines.append(f"OFF      {r.id}: disabled")
            continue
        if verbose or (r.status is not Status.OK and not r.findings):
            lines.append(f"{r.status.name:<8} {r.id}: {escape_untrusted(r.summary)}")
        for f in r.findings:
            if f.status is Status.OK and not verbose:
                continue
            line = f"{f.status.name:<8} {f.check}: {escape_untrusted(f.where)}: {escape_untrusted(f.what)}"
            if f.todo:
                line += f" -> {escape_untrusted(f.todo)}"
            lines.append(("  " if verbose else "") + line)
    if lines or verbose:
        lines.append(f"ovlinspect check: {report.status.name} ({_counts(report)}, {report.duration_seconds:.2f}s)")
    return lines


def _counts(report: CheckReport) -> str:
    n: dict[Status, int] = {}
    for r in report.results:
        if r.enabled:
            n[r.status] = n.get(r.status, 0) + 1
    return ", ".join(f"{v} {k.name.lower()}" for k, v in sorted(n.items(), key=lambda kv: -kv[0])) or "no checks enabled"


def report_doc(report: CheckReport) -> dict[str, Any]:
    """The JSON document (schema_version is added by dumps)."""
    return {
        "status": int(report.status),
        "status_text": report.status.name,
        "timestamp_seconds": round(report.timestamp_seconds, 3),
        "duration_seconds": round(report.duration_seconds, 3),
        "checks": [
            {
                "id": r.id,
                "title": r.title,
                "enabled": r.enabled,
                "status": int(r.status),
                "status_text": r.status.name,
                "summary": display(r.summary),
                "thresholds": dict(r.params),
                "findings": [
                    {
                        "status": int(f.status),
                        "status_text": f.status.name,
                        "where": display(f.where),
                        "what": display(f.what),
                        "todo": display(f.todo),
                        "labels": {k: display(v) for k, v in f.labels.items()},
                    }
                    for f in r.findings
                ],
                "metrics": [
                    {"name": m.name, "labels": {k: display(v) for k, v in m.labels}, "value": m.value} for m in r.metrics
                ],
            }
            for r in report.results
        ],
    }
