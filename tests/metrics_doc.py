"""docs/metrics.md as a reader sees it: the tables a Markdown renderer makes of it.

Tests that compare the documentation with what the exporter serves read the
families and the poll-error reasons from here. The page is parsed by
markdown-it-py with GFM tables, so a row that does not render (after a blank
line, outside any table) documents nothing, as on GitHub.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

REPO = Path(__file__).resolve().parent.parent
METRICS_DOC = REPO / "docs" / "metrics.md"
KINDS = ("gauge", "counter", "histogram", "summary")
_CODE = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Table:
    section: str  # the heading the table is under
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]  # cells as Markdown source (code spans keep their backticks)


@dataclass(frozen=True)
class DocFamily:
    """One row of a family table: `name` as on /metrics (counters with `_total`)."""

    name: str
    kind: str
    unit: str
    section: str

    @property
    def is_pattern(self) -> bool:
        return "<" in self.name

    def matches(self, name: str) -> bool:
        """A concrete row names one family; a pattern row (`k6_<name>_seconds`) many."""
        if not self.is_pattern:
            return name == self.name
        parts = re.split(r"<[^>]+>", self.name)
        return re.fullmatch("[a-zA-Z0-9_]+".join(map(re.escape, parts)), name) is not None


def tables(path: Path = METRICS_DOC) -> list[Table]:
    return list(_tables(path.read_text(encoding="utf-8")))


@cache
def _tables(text: str) -> tuple[Table, ...]:
    found: list[Table] = []
    section = ""
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.type == "heading_open":
            section = tokens[i + 1].content
        elif token.type == "table_open":
            end = next(j for j in range(i, len(tokens)) if tokens[j].type == "table_close")
            found.append(_table(section, tokens[i:end]))
            i = end
        i += 1
    return tuple(found)


def _table(section: str, tokens: list[Token]) -> Table:
    rows: list[tuple[str, ...]] = []
    row: list[str] = []
    for token in tokens:
        if token.type == "tr_open":
            row = []
        elif token.type == "inline":
            row.append(token.content.strip())
        elif token.type == "tr_close":
            rows.append(tuple(row))
    return Table(section, rows[0], tuple(rows[1:]))


def documented_families(path: Path = METRICS_DOC) -> list[DocFamily]:
    """Every row of every table headed `family | type | unit | …`; a first
    cell may name several families (`flux_<n>_min` / `flux_<n>_max`)."""
    families = []
    for table in tables(path):
        if table.header[:3] != ("family", "type", "unit"):
            continue
        for cells in table.rows:
            kind = cells[1].strip()
            assert kind in KINDS, f"{table.section}: {cells[0]} has type {kind!r}"
            for name in _CODE.findall(cells[0]):
                families.append(DocFamily(name, kind, cells[2].strip(), table.section))
    return families


def documented_reasons(path: Path = METRICS_DOC) -> set[str]:
    """The `reason` column of the poll error reasons table."""
    (table,) = [t for t in tables(path) if t.header[:2] == ("reason", "when")]
    return {_CODE.fullmatch(cells[0]).group(1) for cells in table.rows}  # type: ignore[union-attr]


def table_like_lines_outside_tables(path: Path = METRICS_DOC) -> list[str]:
    """Lines that look like table rows but that no table renders."""
    text = path.read_text(encoding="utf-8")
    rendered = {row for table in _tables(text) for row in (table.header, *table.rows)}
    stray = []
    for line in text.splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = tuple(cell.strip() for cell in line.strip().strip("|").split("|"))
        if cells not in rendered:
            stray.append(line)
    return stray
