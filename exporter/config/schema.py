"""The JSON Schema of exporter.toml, generated from the config models.

`api-metrics-exporter config-schema` prints it; the repository ships it as
`exporter.schema.json`, which the shipped exporter.toml names with a Taplo
`#:schema` directive so that editors complete and check keys. It says what
the loader accepts key by key (durations as numbers or `"5m"`, secrets as
printable ASCII with their `_file` twins, unknown keys refused); the checks
that span several keys (a credential unless the simulator serves the source,
unique names) are the loader's alone.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

DIALECT = "https://json-schema.org/draft/2020-12/schema"


class _NoFieldTitles(GenerateJsonSchema):
    # Titles such as "Max Series" repeat the key; editors show the description.
    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def config_schema(root: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of the whole file whose root model is `root`."""
    schema = root.model_json_schema(mode="validation", schema_generator=_NoFieldTitles)
    return {"$schema": DIALECT, **schema}


def schema_text(root: type[BaseModel]) -> str:
    """The schema as the repository ships it (stable key order, final newline)."""
    return json.dumps(config_schema(root), indent=2, ensure_ascii=False) + "\n"
