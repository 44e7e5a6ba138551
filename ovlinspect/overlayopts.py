"""Pure decoder: overlay super options (as printed in mountinfo) -> OverlaySpec. No I/O.

What the kernel prints (fs/overlayfs/params.c, ovl_show_options; checked on 6.18 by hand and by
tests/test_kernel_ls.py):
- `lowerdir=<the user's string>`: seq_show_option() octal-escapes ",= \\t\\n\\\\"; inside,
  `\\X` is a user escape for any X (`\\:` and `\\,` literal), an unescaped ':' separates layers
  (leftmost = top) and one '::' starts the data-only layers (ovl_parse_param_split_lowerdirs).
- `lowerdir+=P` / `datadir+=P` (new mount API, fsconfig): one path each, no user escapes.
- `upperdir=` / `workdir=`: with the legacy `lowerdir=` form the kernel unescapes `\\X` before
  the lookup (ovl_mount_dir -> ovl_unescape); with `lowerdir+=` it used the path verbatim
  (a dir named `b\\sl` was mounted as is on 6.18).
- any other option only when it differs from the default; kept verbatim.
Options are split on ',' outside double quotes (SELinux `context="…:c1,c2"`) *before* octal
decoding, since the kernel escapes ',' inside values as \\054.
"""

from __future__ import annotations

import os

from ovlinspect.errors import InputError
from ovlinspect.model import LayerRole, LayerSpec, OverlaySpec
from ovlinspect.mountinfo import decode_octal


def split_options(raw: str) -> list[str]:
    """Split a raw option string on commas that are not inside double quotes."""
    parts: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in raw:
        if ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == "," and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p != ""]


def _decode(value: str) -> str:
    return os.fsdecode(decode_octal(os.fsencode(value)))


def unescape_user(value: str) -> str:
    """Remove the user's backslash escapes: `\\X` -> `X` for any X (the kernel's ovl_unescape)."""
    if "\\" not in value:
        return value
    out: list[str] = []
    it = iter(value)
    for ch in it:
        if ch == "\\":
            nxt = next(it, None)
            if nxt is not None:
                out.append(nxt)
        else:
            out.append(ch)
    return "".join(out)


def escape_user(path: str) -> str:
    """Inverse of the lowerdir= user syntax for one path: escape '\\', ':' and ','."""
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def split_lowerdir(value: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Split a decoded `lowerdir=` string into (lowers, data-only), each as (written, path).

    Mirrors ovl_parse_param_split_lowerdirs(): '\\' escapes the next char, ':' separates,
    one '::' starts the data-only layers. Raises InputError on the forms the kernel refuses.
    """
    groups: list[list[tuple[str, str]]] = [[]]
    written: list[str] = []
    i, n = 0, len(value)
    while True:
        if i < n and value[i] == "\\":
            written.append(value[i : i + 2])
            i += 2
            continue
        if i >= n or value[i] == ":":
            seg = "".join(written)
            if seg == "":
                raise InputError("empty layer in lowerdir=", hint="the kernel refuses empty lowerdir entries")
            groups[-1].append((seg, unescape_user(seg)))
            written = []
            if i >= n:
                break
            if i + 1 < n and value[i + 1] == ":":
                if len(groups) == 2:
                    raise InputError("more than one '::' in lowerdir=")
                groups.append([])
                i += 2
            else:
                i += 1
            continue
        written.append(value[i])
        i += 1
    if len(groups) == 2 and not groups[1]:
        raise InputError("'::' in lowerdir= is not followed by a data-only layer")
    return groups[0], (groups[1] if len(groups) == 2 else [])


def parse_overlay_options(raw: str) -> OverlaySpec:
    """Decode raw (still octal-escaped) overlay super options. Raises InputError when malformed."""
    lowers: list[LayerSpec] = []
    datas: list[LayerSpec] = []
    upper_val: str | None = None
    work_val: str | None = None
    legacy_lower: str | None = None
    options: dict[str, str | None] = {}
    for part in split_options(raw):
        key, eq, val = part.partition("=")
        if key == "lowerdir+" and eq:
            v = _decode(val)
            lowers.append(LayerSpec(LayerRole.LOWER, v, v))
        elif key == "datadir+" and eq:
            v = _decode(val)
            datas.append(LayerSpec(LayerRole.DATA_ONLY, v, v))
        elif key == "lowerdir" and eq:
            if legacy_lower is not None:
                raise InputError("lowerdir= given twice")
            legacy_lower = _decode(val)
        elif key == "upperdir" and eq:
            upper_val = _decode(val)
        elif key == "workdir" and eq:
            work_val = _decode(val)
        else:
            options[_decode(key)] = _decode(val) if eq else None
    if legacy_lower is not None and (lowers or datas):
        raise InputError("lowerdir= mixed with lowerdir+=/datadir+=", hint="the kernel refuses this mix")
    api = "new" if (lowers or datas) else "legacy"
    if legacy_lower is not None:
        lo, da = split_lowerdir(legacy_lower)
        lowers = [LayerSpec(LayerRole.LOWER, p, w) for w, p in lo]
        datas = [LayerSpec(LayerRole.DATA_ONLY, p, w) for w, p in da]
    if not lowers:
        raise InputError("no lowerdir in overlay options", hint="an overlay needs at least one lower layer")
    fix = unescape_user if api == "legacy" else (lambda s: s)
    upper = LayerSpec(LayerRole.UPPER, fix(upper_val), upper_val) if upper_val is not None else None
    work = fix(work_val) if work_val is not None else None
    return OverlaySpec(tuple(lowers), tuple(datas), upper, work, options, api)
