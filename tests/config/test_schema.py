"""The JSON Schema of exporter.toml and the sample configs, as shipped and as printed.

Every TOML example in the docs is validated against the schema (with the
`jsonschema` library, as an editor would). A block with a `sources` key is a
whole config and is validated as it is; a block without one is a fragment of
a config (`[server.tls]`, `[otlp]`…): it is validated against the same schema
with the root's `required` list dropped, so every table and key it shows must
still be known and well-typed, and a `[[sources]]` table in it complete.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from exporter.app.settings import Settings
from exporter.config.schema import schema_text
from exporter.sources import REGISTRY
from tests.conftest import REPO
from tests.test_cli_config import env_without_config

SCHEMA_FILE = REPO / "exporter.schema.json"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```toml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120, env=env_without_config())


def shipped_schema() -> dict[str, Any]:
    import json

    return json.loads(SCHEMA_FILE.read_text())


def validator(fragment: bool = False) -> Draft202012Validator:
    schema = shipped_schema()
    if fragment:
        schema = copy.deepcopy(schema)
        schema.pop("required", None)
    return Draft202012Validator(schema)


def problems(document: dict[str, Any], fragment: bool = False) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(fragment).iter_errors(document)]


def toml_blocks() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 2
            found.append((f"{doc.relative_to(REPO)}:{line}", match.group(1)))
    return found


def test_the_shipped_schema_is_the_generated_one() -> None:
    generated = schema_text(Settings)
    assert SCHEMA_FILE.read_text() == generated, \
        "exporter.schema.json is stale: api-metrics-exporter config-schema > exporter.schema.json"
    printed = run("config-schema")
    assert printed.returncode == 0 and printed.stdout == generated


def test_the_schema_is_valid_and_describes_every_key() -> None:
    schema = shipped_schema()
    Draft202012Validator.check_schema(schema)
    undescribed = []
    for table, node in [("<root>", schema), *schema["$defs"].items()]:
        undescribed += [f"{table}.{key}" for key, prop in node.get("properties", {}).items()
                        if not prop.get("description")]
    assert undescribed == []


def test_the_shipped_config_names_the_schema_and_fits_it() -> None:
    text = (REPO / "exporter.toml").read_text()
    assert text.splitlines()[0] == "#:schema ./exporter.schema.json"  # Taplo's directive, relative to the file
    assert problems(tomllib.loads(text)) == []


def test_the_docs_have_toml_examples() -> None:
    assert len(toml_blocks()) >= 4  # so that the test below cannot pass on nothing


@pytest.mark.parametrize(("where", "text"), toml_blocks(), ids=[where for where, _ in toml_blocks()])
def test_every_toml_example_in_the_docs_fits_the_schema(where: str, text: str) -> None:
    document = tomllib.loads(text)
    assert problems(document, fragment="sources" not in document) == []


@pytest.mark.parametrize(("document", "expected"), [
    ({"sources": []}, "sources: [] should be non-empty"),
    ({}, "'sources' is a required property"),
    ({"source": [{}]}, "Additional properties are not allowed ('source' was unexpected)"),
    ({"sources": [{"type": "k6_cloud", "name": "k", "test_run_ids": [1], "intervall": "5m"}]}, "intervall"),
    ({"sources": [{"type": "k6_cloud", "name": "k", "test_run_ids": [1], "interval": "5 min"}]}, "interval"),
    ({"sources": [{"type": "k6_cloud", "name": "k", "test_run_ids": [1], "token": "tökén"}]}, "token"),
    ({"sources": [{"type": "k6_cloud", "name": "k", "test_run_ids": [1], "token": "a", "token_file": "/f"}]},
     "sources/0"),
    ({"sources": [{"type": "k6_cloud", "name": "k", "test_run_ids": [1], "base_url": "api.k6.io"}]}, "base_url"),
    ({"sources": [{"type": "k7", "name": "k"}]}, "sources/0"),
    ({"sources": [{"type": "flux", "name": "f"}], "otlp": {"headers": {"authorization": "Bearer é"}}},
     "otlp/headers/authorization"),
])
def test_the_schema_refuses_what_the_loader_refuses(document: dict[str, Any], expected: str) -> None:
    found = problems(document)
    assert found and expected in "\n".join(found), found


def test_the_schema_takes_durations_secrets_and_their_files() -> None:
    source = {"type": "k6_cloud", "name": "k", "test_run_ids": [1], "interval": "1h30m", "timeout": 45,
              "token_file": "/run/secrets/k6", "http": {"backoff": "500ms"}}
    otlp = {"enabled": True, "headers": {"authorization_file": "/run/secrets/é/otlp", "x-org": "1"}}
    assert problems({"sources": [source], "otlp": otlp}) == []


@pytest.mark.parametrize("source_type", list(REGISTRY))
def test_sample_config_fits_the_schema_and_runs_against_the_simulator(source_type: str, tmp_path: Path) -> None:
    printed = run("sample-config", source_type)
    assert printed.returncode == 0, printed.stderr
    document = tomllib.loads(printed.stdout)
    assert problems(document) == []
    assert [s["type"] for s in document["sources"]] == [source_type]
    # Every commented-out key, uncommented, is a valid key with a valid value.
    uncommented = re.sub(r"^# (\[?[a-z_.]+\]?( = |$))", r"\1", printed.stdout, flags=re.MULTILINE)
    assert uncommented.count("\n#") < printed.stdout.count("\n#")
    assert problems(tomllib.loads(uncommented)) == []
    config = tmp_path / "sample.toml"
    config.write_text(printed.stdout)
    checked = run("check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "simulator" in checked.stdout and "config OK: 1 source(s)" in checked.stdout
    polled = run("once", "--config", str(config))
    assert polled.returncode == 0, polled.stderr
    assert polled.stdout.strip(), "the simulator serves the sample's targets"
