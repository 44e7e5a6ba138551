"""Pure parser: mountinfo bytes -> MountEntry records plus Problems for bad lines. No I/O.

Grammar (Documentation/filesystems/proc.rst §3.5, fs/proc_namespace.c show_mountinfo):

    36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    (1)(2) (3)   (4)   (5)      (6)      (7)   (8) (9)   (10)        (11)

(7) is zero or more optional tags ended by the "-" separator (8). The kernel escapes space,
tab, newline and backslash in (4), (5) and (10) as \\ooo (seq_path / mangle(): " \\t\\n\\\\");
filesystems may print other \\ooo escapes in (11) (overlay escapes ",= \\t\\n\\\\" there through
seq_show_option). The source (10) may be empty, which leaves two spaces in a row.
"""

from __future__ import annotations

import os
import re

from ovlinspect.errors import Problem
from ovlinspect.model import MountEntry

_OCTAL = re.compile(rb"\\([0-3][0-7]{2})")


def decode_octal(raw: bytes) -> bytes:
    """Decode every \\ooo escape (the kernel's mangle/seq_escape form); leave other bytes."""
    if b"\\" not in raw:
        return raw
    return _OCTAL.sub(lambda m: bytes((int(m.group(1), 8),)), raw)


def decode_field(raw: bytes) -> str:
    """Decode octal escapes, then bytes -> str losslessly (surrogateescape)."""
    return os.fsdecode(decode_octal(raw))


def _parse_line(line: bytes, number: int) -> MountEntry:
    """Parse one line; raise ValueError naming the field on malformed input."""
    fields = line.split(b" ")
    try:
        sep = fields.index(b"-", 6)
    except ValueError:
        raise ValueError("no ' - ' separator after the optional fields") from None
    if sep < 6:
        raise ValueError("fewer than 6 fields before the separator")
    if len(fields) - sep - 1 < 3:
        raise ValueError("fewer than 3 fields after the separator")
    try:
        mount_id = int(fields[0])
        parent_id = int(fields[1])
    except ValueError:
        raise ValueError("field 1/2 (mount id / parent id) is not a number") from None
    majmin = fields[2].split(b":")
    if len(majmin) != 2 or not all(x.isdigit() for x in majmin):
        raise ValueError("field 3 (major:minor) is malformed")
    # Fields after the separator: fstype, source, super options. A super-option string has no
    # raw spaces (they are escaped), so anything beyond three fields is malformed.
    tail = fields[sep + 1 :]
    if len(tail) != 3:
        raise ValueError(f"{len(tail)} fields after the separator, expected 3")
    fstype, source, superopts = tail
    if not fstype:
        raise ValueError("field 9 (fstype) is empty")
    return MountEntry(
        mount_id=mount_id,
        parent_id=parent_id,
        major=int(majmin[0]),
        minor=int(majmin[1]),
        root=decode_field(fields[3]),
        mountpoint=decode_field(fields[4]),
        mount_options=decode_field(fields[5]),
        optional_fields=tuple(decode_field(f) for f in fields[6:sep]),
        fstype=decode_field(fstype),
        source=decode_field(source),
        super_options_raw=os.fsdecode(superopts),
        line_number=number,
    )


# Malformed lines kept as Problems; the rest are only counted (a file of garbage must not cost
# hundreds of bytes per line: 1,000,000 bad lines took 850 MB with `ls --json`).
MAX_LINE_PROBLEMS = 100


def parse_mountinfo(data: bytes) -> tuple[list[MountEntry], list[Problem]]:
    """Parse a whole mountinfo file. Bad lines become Problems (line number, field); never raises.

    After MAX_LINE_PROBLEMS malformed lines, one more Problem counts the rest."""
    entries: list[MountEntry] = []
    problems: list[Problem] = []
    more = 0
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            entries.append(_parse_line(line, number))
        except ValueError as exc:
            if len(problems) >= MAX_LINE_PROBLEMS:
                more += 1
                continue
            shown = line[:80].decode("ascii", "backslashreplace")
            problems.append(Problem("malformed", f"mountinfo line {number}: {exc}: {shown!r}", line=number))
    if more:
        problems.append(Problem("malformed", f"{more} more malformed mountinfo lines not shown"))
    return entries, problems
