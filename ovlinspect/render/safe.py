"""Make untrusted strings (file names, paths, xattr values) safe for a terminal. Pure.

Every name that comes from a layer is attacker-controlled. Text output shows it with:
- bytes that were not valid UTF-8 (surrogateescape'd) as `\\xNN`;
- C0/C1 control characters and DEL as `\\n`, `\\t`, `\\r`, `\\e` or `\\xNN` (no ESC/OSC/BEL reaches the tty);
- bidirectional overrides/isolates (U+061C, U+200E/F, U+202A-E, U+2066-9) as `\\uXXXX`;
- a backslash as `\\\\`, so the escaped form is unambiguous.
Rich markup is never interpreted: renderers wrap the result in `rich.text.Text`, not markup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

_BIDI = {0x061C, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069}
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\x1b": "\\e", "\\": "\\\\"}


def _needs(s: str) -> bool:
    for ch in s:
        o = ord(ch)
        if o < 0x20 or 0x7F <= o <= 0x9F or ch == "\\" or 0xDC80 <= o <= 0xDCFF or o in _BIDI:
            return True
    return False


def escape_untrusted(s: str) -> str:
    """Return `s` with control characters, invalid bytes and bidi controls escaped."""
    if not _needs(s):
        return s
    out = []
    for ch in s:
        o = ord(ch)
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x20 or 0x7F <= o <= 0x9F:
            out.append(f"\\x{o:02x}")
        elif o in _BIDI:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def text(s: object, style: str = "") -> Text:
    """A rich Text (never parsed as markup) holding the escaped string."""
    from rich.text import Text

    return Text(escape_untrusted(str(s)), style=style)
