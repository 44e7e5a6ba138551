"""Pure decoder: overlay super options (as printed in mountinfo) -> OverlaySpec. No I/O.

What the kernel prints (fs/overlayfs/params.c, ovl_show_options; checked on 6.18 by hand and by
tests/test_kernel_ls.py):
- `lowerdir=<the user's string>`: seq_show_option() octal-escapes ",= \\t\\n\\\\"; inside,
  `\\X` is a user escape for any X (`\\:` and `\\,` literal), an unescaped ':' separates layers
  (leftmost = top) and one '::' starts the data-only layers (ovl_parse_param_split_lowerdirs).
- `lowerdir+=P` / `datadir+=P` (new mount API, fsconfig): one path each, no user escapes.
- `upperdir=` / `workdir=`: the kernel removes `\\X` user escapes before the lookup with either
  API (ovl_parse_layer -> ovl_mount_dir -> ovl_unescape) but prints the string as given: with
  dirs `u\\sv` and `usv` both present, fsconfig(upperdir=`u\\sv`) wrote into `usv` on 6.18,
  while lowerdir+=`l\\x` used `l\\x` verbatim (ovl_mount_dir_noesc).
- any other option only when it differs from the default; kept verbatim.
Options are split on ',' outside double quotes (SELinux `context="…:c1,c2"`) *before* octal
decoding, since the kernel escapes ',' inside values as \\054.
"""

from __future__ import annotations

import functools
import os

from ovlinspect.errors import InputError
from ovlinspect.model import LayerRole, LayerSpec, OverlaySpec
from ovlinspect.mountinfo import decode_octal

# SELinux mount options whose quoted values may hold commas (security/selinux/hooks.c,
# selinux_sb_show_options prints them as key="value").
_QUOTED_KEYS = ("context=", "fscontext=", "defcontext=", "rootcontext=")


def split_options(raw: str) -> list[str]:
    """Split a raw option string on commas, except inside a quoted SELinux context value.

    Only a `"` right after one of the SELinux keys opens a quoted region: overlay paths are not
    quoted by the kernel and may themselves contain `"`.
    """
    if '"' not in raw:
        return [p for p in raw.split(",") if p]
    parts: list[str] = []
    i, n, start = 0, len(raw), 0
    while i <= n:
        if i == n or raw[i] == ",":
            if i > start:
                parts.append(raw[start:i])
            start = i + 1
            i += 1
            continue
        if i == start:
            for key in _QUOTED_KEYS:
                if raw.startswith(key + '"', i):
                    end = raw.find('"', i + len(key) + 1)
                    if end != -1:
                        i = end + 1
                        break
            else:
                i += 1
            continue
        i += 1
    return parts


def _decode(value: str) -> str:
    if "\\" not in value:
        return value  # nothing octal-escaped: the common case
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

    Mirrors ovl_parse_param_split_lowerdirs() and ovl_parse_param_lowerdir(): '\\' escapes the
    next char, ':' separates layers, '::' makes the next layer data-only (`A:B::D1::D2`; seen on
    6.18), ':::' is refused, and a regular layer may not follow a data-only one ("regular lower
    layers cannot follow data lower layers"). Raises InputError on the forms the kernel refuses.
    """
    if "\\" not in value and ":::" not in value:
        # fast path (no user escapes): the common case on busy hosts
        first, *rest = value.split("::")
        lows = first.split(":")
        if "" not in lows and all(r and ":" not in r for r in rest):
            return [(p, p) for p in lows], [(p, p) for p in rest]
    lowers: list[tuple[str, str]] = []
    datas: list[tuple[str, str]] = []
    written: list[str] = []
    data_next = False
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
            if data_next:
                datas.append((seg, unescape_user(seg)))
            elif datas:
                raise InputError("a regular lower layer follows a data-only layer in lowerdir=")
            else:
                lowers.append((seg, unescape_user(seg)))
            written = []
            if i >= n:
                break
            if value.startswith(":::", i):
                raise InputError("':::' in lowerdir=", hint="only ':' or '::' separate layers")
            data_next = value.startswith("::", i)
            i += 2 if data_next else 1
            continue
        written.append(value[i])
        i += 1
    return lowers, datas


@functools.lru_cache(maxsize=4096)
def _legacy_layers(value: str) -> tuple[tuple[LayerSpec, ...], tuple[LayerSpec, ...]]:
    """split_lowerdir as LayerSpecs, memoised: on a busy host many mounts (the containers of one
    image) print the very same lowerdir= string. Raises InputError (not cached) when malformed."""
    lo, da = split_lowerdir(value)
    return tuple(LayerSpec(LayerRole.LOWER, p, w) for w, p in lo), tuple(LayerSpec(LayerRole.DATA_ONLY, p, w) for w, p in da)


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
        lo_t, da_t = _legacy_layers(legacy_lower)  # the same tuples for the same string (shared)
    else:
        lo_t, da_t = tuple(lowers), tuple(datas)
    if not lo_t:
        raise InputError("no lowerdir in overlay options", hint="an overlay needs at least one lower layer")
    upper = LayerSpec(LayerRole.UPPER, unescape_user(upper_val), upper_val) if upper_val is not None else None
    work = unescape_user(work_val) if work_val is not None else None
    return OverlaySpec(lo_t, da_t, upper, work, options, api)
