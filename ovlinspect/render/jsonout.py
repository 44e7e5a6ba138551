"""JSON output: versioned records, separate from the model so the schema stays put. Pure.

Non-UTF-8 names: JSON strings must be valid Unicode, so a path whose bytes are not valid UTF-8
is written with U+FFFD in its place in the plain field, and losslessly as standard base64 of the
raw bytes in a sibling field named `<field>_b64` (only present when needed; for lists, a parallel
list with null for names that needed no help). Decode `<field>_b64` to get the exact bytes.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

SCHEMA_VERSION = 1


def is_lossy(s: str) -> bool:
    if s.isascii():
        return False
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def display(s: str) -> str:
    """A valid-Unicode rendering of a surrogateescape'd str (invalid bytes -> U+FFFD)."""
    if s.isascii() or not is_lossy(s):
        return s
    return os.fsencode(s).decode("utf-8", "replace")


def b64(s: str) -> str:
    return base64.b64encode(os.fsencode(s)).decode("ascii")


def put_path(rec: dict[str, Any], key: str, value: str | None) -> None:
    """Set rec[key] (and rec[key_b64] when the name is not valid UTF-8)."""
    if value is None:
        rec[key] = None
        return
    rec[key] = display(value)
    if is_lossy(value):
        rec[key + "_b64"] = b64(value)


def put_paths(rec: dict[str, Any], key: str, values: list[str]) -> None:
    rec[key] = [display(v) for v in values]
    if any(is_lossy(v) for v in values):
        rec[key + "_b64"] = [b64(v) if is_lossy(v) else None for v in values]


def problem_record(p: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"kind": p.kind, "message": display(p.message)}
    put_path(rec, "path", p.path)
    if p.line is not None:
        rec["line"] = p.line
    return rec


def dumps(doc: dict[str, Any]) -> str:
    """Serialise a document, schema_version first (compact: the C encoder, fast on big hosts;
    pipe through `jq .` or `python -m json.tool` to read it)."""
    out = {"schema_version": SCHEMA_VERSION}
    out.update(doc)
    return json.dumps(out, ensure_ascii=False)
