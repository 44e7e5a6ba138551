"""Aligned text columns for long listings. Pure, but for the console it prints to.

rich's Table measures, wraps and renders every cell through its layout engine: about 0.7 ms a row
here, so `ls -l` of 1,000 mounts (26,000 rows) took 11 s. This lays out what the listings need,
the way those tables looked (`box=None, pad_edge=False`: two spaces between columns, a bold header,
right-justified numbers) in one pass over the cells:
- every cell is escaped (render.safe.escape_untrusted) and never parsed as markup;
- when the table is wider than the console, the columns marked `fold` are narrowed (in proportion
  to their width, to at least FOLD_MIN cells) and their cells continue on the next lines, as
  rich's `overflow="fold"` did; with no room left, lines are left to the terminal;
- with colours off (not a terminal, NO_COLOR) the lines are written as they are; otherwise as one
  styled rich Text, printed without rewrapping;
- trailing blanks are not written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ovlinspect.render.safe import escape_untrusted

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

FOLD_MIN = 12
GAP = "  "

Cell = str | tuple[str, str]  # text, or (text, rich style)


@dataclass(frozen=True)
class Column:
    header: str
    justify: str = "left"  # "left" | "right"
    fold: bool = False  # may continue on the next lines when the table is too wide


def _cells(s: str) -> int:
    if s.isascii():
        return len(s)
    from rich.cells import cell_len

    return cell_len(s)


def _chop(s: str, width: int) -> list[str]:
    """`s` cut into pieces of at most `width` terminal cells (a wide character is never split)."""
    if _cells(s) <= width:
        return [s]
    if s.isascii():
        return [s[i : i + width] for i in range(0, len(s), width)]
    from rich.cells import get_character_cell_size

    out: list[str] = []
    cur: list[str] = []
    used = 0
    for ch in s:
        w = get_character_cell_size(ch)
        if used + w > width and cur:
            out.append("".join(cur))
            cur, used = [], 0
        cur.append(ch)
        used += w
    out.append("".join(cur))
    return out


def layout(columns: Sequence[Column], rows: Sequence[Sequence[Cell]], width: int) -> list[list[tuple[str, str]]]:
    """The lines of the table: each a list of (text, style) pieces, header first. Pure."""
    heads = [(c.header, "bold") for c in columns]
    cells = [[(escape_untrusted(c), "") if isinstance(c, str) else (escape_untrusted(c[0]), c[1]) for c in r] for r in rows]
    widths = [_cells(h) for h, _ in heads]
    for r in cells:
        for i, (t, _) in enumerate(r):
            n = _cells(t)
            if n > widths[i]:
                widths[i] = n
    total = sum(widths) + len(GAP) * (len(widths) - 1)
    foldable = [i for i, c in enumerate(columns) if c.fold and widths[i] > FOLD_MIN]
    if total > width and foldable:
        room = sum(widths[i] - FOLD_MIN for i in foldable)
        take = min(total - width, room)
        gives = [(widths[i] - FOLD_MIN) * take // room for i in foldable]  # in proportion to their room
        for i, g in zip(foldable, gives, strict=True):
            widths[i] -= g
        rest, j = take - sum(gives), 0
        while rest > 0:  # the rounding rest, a cell at a time (take <= room: there is room for it)
            i = foldable[j % len(foldable)]
            if widths[i] > FOLD_MIN:
                widths[i] -= 1
                rest -= 1
            j += 1
    lines: list[list[tuple[str, str]]] = []
    last = len(columns) - 1
    for r in [heads, *cells]:
        parts = [_chop(t, widths[i]) if columns[i].fold else [t] for i, (t, _) in enumerate(r)]
        for k in range(max(len(p) for p in parts)):
            line: list[tuple[str, str]] = []
            for i, p in enumerate(parts):
                t = p[k] if k < len(p) else ""
                pad = " " * (widths[i] - _cells(t))
                t = pad + t if columns[i].justify == "right" else t + pad
                if i < last:
                    t += GAP
                line.append((t, r[i][1] if t.strip() else ""))
            # no trailing blanks
            while line and not line[-1][0].strip():
                line.pop()
            if line:
                t, st = line[-1]
                line[-1] = (t.rstrip(), st)
            lines.append(line)
    return lines


def plain_console(console: Console) -> bool:
    """Whether this console shows no styles (not a terminal, or NO_COLOR): lines can be written as they are."""
    return console.color_system is None or console.no_color


def emit_line(console: Console, line: Text) -> None:
    """Print one line of a streamed listing. Without styles it is written as it is (a console.print
    costs ~0.3 ms a line, and rewraps lines longer than the console's width, which a pipe does not
    want); on a terminal, rich prints it."""
    if plain_console(console):
        console.file.write(line.plain + "\n")
    else:
        console.print(line)


def print_columns(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[Cell]], indent: str = "") -> None:
    """Lay the table out for this console's width and print it."""
    lines = layout(columns, rows, max(20, console.width - len(indent)))
    if plain_console(console):
        console.file.write("".join(indent + "".join(t for t, _ in ln) + "\n" for ln in lines))
        return
    from rich.text import Text as RichText

    out = RichText(no_wrap=True, overflow="ignore", end="")
    for ln in lines:
        out.append(indent)
        for t, st in ln:
            out.append(t, style=st or None)
        out.append("\n")
    console.print(out, soft_wrap=True, crop=False)

