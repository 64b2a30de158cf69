"""The documentation as a reader sees it: tables that render, links and file names that exist.

What docs/metrics.md says about the served families is checked against a
running exporter in tests/test_demo.py; this module checks the pages themselves.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tests import metrics_doc
from tests.conftest import REPO

PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), REPO / "charts" / "api-metrics-exporter" / "README.md"])
# A code span that names a file: a path with a directory, or a file name with an extension.
FILE_NAME = re.compile(r"[\w.-]+(?:/[\w.<>-]+)+|[\w-]+\.(?:md|py|toml|json|ya?ml|txt|sh)")


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def links_and_code(page: Path) -> tuple[list[str], list[str]]:
    links, code = [], []
    for token in MarkdownIt("commonmark").enable("table").parse(page.read_text(encoding="utf-8")):
        for child in token.children or []:
            if child.type == "link_open":
                links.append(str(child.attrs["href"]))
            elif child.type == "code_inline":
                code.append(child.content)
    return links, code


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_table_row_renders(page: Path) -> None:
    """A row after a blank line is a paragraph of pipes, not part of the table."""
    assert metrics_doc.table_like_lines_outside_tables(page) == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_point_into_the_repository(page: Path) -> None:
    links, _ = links_and_code(page)
    for href in links:
        if re.match(r"[a-z]+:", href) or href.startswith("#"):
            continue
        target = (page.parent / href.partition("#")[0]).resolve()
        assert target.exists() and REPO in target.parents, f"{page_id(page)}: {href}"


def test_the_metrics_page_names_only_files_in_the_repository() -> None:
    """docs/metrics.md is for users: every file it names is one they have."""
    page = REPO / "docs" / "metrics.md"
    _, code = links_and_code(page)
    named = [c for c in code if FILE_NAME.fullmatch(c) and "<" not in c]
    missing = [c for c in named if not any((base / c).exists() for base in (REPO, REPO / "docs", REPO / "exporter"))]
    assert not missing
    text = page.read_text(encoding="utf-8")
    assert "seeds/" not in text and "API_NOTES" not in text  # the vendor notes are not shipped
