"""render.columns: the listings' fast table layout looks like the rich Table it replaced, folds
to the console's width without losing a character, and stays escaped."""

from __future__ import annotations

import io
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ovlinspect.render.columns import FOLD_MIN, Cell, Column, layout, print_columns
from ovlinspect.render.safe import escape_untrusted

COLS = [Column("ID", "right"), Column("MOUNTPOINT", fold=True), Column("LOWERS", "right"), Column("UPPER", fold=True), Column("FLAGS")]

_name = st.lists(
    st.one_of(st.characters(codec="utf-8"), st.sampled_from(["\x1b", "\n", "\t", "[bold]", "\u202e", "界", "\\", "\udcff"])),
    min_size=1,
    max_size=30,
).map("".join)
_row = st.tuples(st.integers(0, 10**6).map(str), _name, st.integers(0, 500).map(str), _name, st.sampled_from(["ok", "layer_missing"]))


def _rich_table(rows: list[tuple[str, ...]]) -> str:
    con = Console(file=io.StringIO(), width=10_000, color_system=None, highlight=False, emoji=False)
    t = Table(box=None, pad_edge=False, header_style="bold")
    for c in COLS:
        t.add_column(c.header, justify="right" if c.justify == "right" else "left", overflow="fold")
    for r in rows:
        t.add_row(*(Text(escape_untrusted(c)) for c in r))
    con.print(t)
    return "".join(line.rstrip() + "\n" for line in con.file.getvalue().splitlines())  # type: ignore[attr-defined]


def _ours(rows: Sequence[Sequence[Cell]], width: int = 10_000, **kw: object) -> str:
    con = Console(file=io.StringIO(), width=width, highlight=False, emoji=False, **kw)  # type: ignore[arg-type]
    print_columns(con, COLS, rows)
    return con.file.getvalue()  # type: ignore[attr-defined]


@settings(max_examples=150, deadline=None)
@given(st.lists(_row, min_size=1, max_size=8))
def test_same_text_as_the_rich_table_when_it_fits(rows: list[tuple[str, ...]]) -> None:
    assert _ours(rows, color_system=None) == _rich_table(rows)


_spaceless = _name.filter(lambda s: " " not in s and "\u3000" not in s)
_row_spaceless = st.tuples(st.integers(0, 10**6).map(str), _spaceless, st.integers(0, 500).map(str), _spaceless, st.sampled_from(["ok", "x"]))


@settings(max_examples=150, deadline=None)
@given(st.lists(_row_spaceless, min_size=1, max_size=6), st.integers(40, 120))
def test_folds_to_the_width_and_loses_nothing(rows: list[tuple[str, ...]], width: int) -> None:
    lines = layout(COLS, rows, width)
    natural = [cell_len(t) - (2 if i < len(COLS) - 1 else 0) for i, (t, _) in enumerate(layout(COLS, rows, 10**6)[0])]
    natural[-1] = max(natural[-1], max(cell_len(escape_untrusted(r[-1])) for r in rows))
    narrowest = sum(min(n, FOLD_MIN) if c.fold else n for n, c in zip(natural, COLS, strict=True)) + 2 * (len(COLS) - 1)
    if narrowest <= width:  # the fold columns can give enough: every line fits
        assert all(cell_len("".join(t for t, _ in ln)) <= width for ln in lines)
    # each mountpoint cell, read back from its column's pieces, is the escaped name
    starts = _column_starts(lines[0])
    rebuilt: list[str] = []
    for ln in lines[1:]:
        line = "".join(t for t, _ in ln)
        piece = _slice_cells(line, starts[1], starts[2]).rstrip(" ")
        if line[: starts[1]].strip():  # a new row starts with its ID
            rebuilt.append(piece)
        else:
            rebuilt[-1] += piece
    assert rebuilt == [escape_untrusted(r[1]) for r in rows]


def _column_starts(header: list[tuple[str, str]]) -> list[int]:
    """Cell offsets where each column starts, from the header pieces."""
    starts, at = [], 0
    for t, _ in header:
        starts.append(at)
        at += cell_len(t)
    return [*starts, 10**9]


def _slice_cells(line: str, a: int, b: int) -> str:
    out, at = [], 0
    for ch in line:
        w = cell_len(ch)
        if a <= at < b:
            out.append(ch)
        at += w
    return "".join(out)


def test_narrow_console_folds_long_paths() -> None:
    long = "/var/lib/docker/overlay2/" + "a" * 64 + "/merged"
    rows = [("7", long, "20", long.replace("merged", "diff"), "ok")]
    out = _ours(rows, width=80, color_system=None)
    assert all(cell_len(line) <= 80 for line in out.splitlines())
    assert len(out.splitlines()) > 2
    assert "".join(line[4:].split("  ")[0] for line in out.splitlines()[1:]) == long


def test_terminal_output_is_styled_escaped_and_never_markup() -> None:
    rows = [("1", "/m/[bold red]x\x1b]0;pwn\x07", "3", "/u/\u202eevil", ("layer_missing", "bold red"))]
    out = _ours(rows, width=200, force_terminal=True, color_system="standard")
    assert "\x07" not in out and "\u202e" not in out
    assert "]0;pwn" in out and "\\e]0;pwn\\x07" in out  # shown, escaped
    assert "[bold red]x" in out  # literally, not as markup
    assert "\x1b[1;31mlayer_missing" in out  # our own style does reach the terminal
