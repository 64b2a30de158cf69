"""The documentation as a reader sees it: tables that render, links and file names that exist.

What docs/metrics.md says about the served families is checked against a
running exporter in tests/test_demo.py; this module checks the pages themselves.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from markdown_it import MarkdownIt

from tests import metrics_doc
from tests.charts import test_chart as chart
from tests.conftest import REPO, write_config
from tests.test_integration_prometheus import require

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


# --- docs/production.md: its examples work as written ---------------------------------------

PRODUCTION = REPO / "docs" / "production.md"
CREDENTIALS = {"k6": "k6-token-from-a-file", "bird": "bird-key-from-a-file"}


def fenced(page: Path, language: str) -> list[str]:
    tokens = MarkdownIt("commonmark").parse(page.read_text(encoding="utf-8"))
    return [t.content for t in tokens if t.type == "fence" and t.info.strip() == language]


def check(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("APIMETRICS_")}
    return subprocess.run([sys.executable, "-m", "exporter", "check", "--config", str(config)], cwd=REPO,
                          env={**clean, **(env or {})}, capture_output=True, text=True, timeout=60)


def production_config(tmp_path: Path) -> str:
    """The walkthrough's config, with its secret files and state dir under tmp_path."""
    (toml,) = fenced(PRODUCTION, "toml")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, value in CREDENTIALS.items():
        (secrets / name).write_text(value + "\n")
    return toml.replace("/run/secrets/", f"{secrets}/").replace("/var/lib/api-metrics-exporter", str(tmp_path / "state"))


def test_the_production_config_passes_check_with_credentials_from_files(tmp_path: Path) -> None:
    config = write_config(tmp_path, production_config(tmp_path))
    result = check(config)
    assert result.returncode == 0, result.stderr
    assert "https://api.k6.io" in result.stdout and "https://api.bird.com" in result.stdout
    assert "simulator" not in result.stdout  # no source goes to the fake
    for secret in CREDENTIALS.values():
        assert secret not in result.stdout + result.stderr


def test_the_production_config_takes_a_credential_from_the_environment(tmp_path: Path) -> None:
    text = production_config(tmp_path)
    without = re.sub(r'^token_file = .*$', "", text, flags=re.MULTILINE)
    assert without != text
    config = write_config(tmp_path, without)
    assert check(config).returncode == 2  # the token is required
    result = check(config, {"APIMETRICS_SOURCES__K6_PROD__TOKEN": "k6-token-from-the-environment"})
    assert result.returncode == 0, result.stderr
    assert "k6-token-from-the-environment" not in result.stdout + result.stderr


@pytest.mark.integration
def test_the_scrape_config_is_valid(tmp_path: Path) -> None:
    promtool = require("promtool")
    (scrape,) = [block for block in fenced(PRODUCTION, "yaml") if "scrape_configs" in block]
    config = tmp_path / "prometheus.yml"
    config.write_text(scrape)
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert yaml.safe_load(scrape)["scrape_configs"][0]["static_configs"][0]["targets"] == ["exporter.example.internal:9687"]


def test_the_helm_values_render_and_pass_check(tmp_path: Path) -> None:
    (values_text,) = [block for block in fenced(PRODUCTION, "yaml") if "serviceMonitor" in block]
    values = yaml.safe_load(values_text)
    # Given with --set-file at install time, as the walkthrough says.
    values["secrets"] = {"k6-token": "k6-token-from-helm", "bird-key": "bird-key-from-helm"}
    objs = chart.objects(chart.render(values))
    assert {o["kind"] for o in objs} >= {"Deployment", "ServiceMonitor", "PersistentVolumeClaim", "Secret"}
    spec = chart.workload(objs)["spec"]["template"]["spec"]
    config = chart.lay_out_pod_files(tmp_path / "pod", spec, objs)
    result = chart.exporter_check(config)
    assert result.returncode == 0, f"{config.read_text()}\n{result.stdout}\n{result.stderr}"
    assert "simulator" not in result.stdout
