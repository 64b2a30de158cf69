"""The `type = "pluto"` config: one target per run, named (`run_ids`) or discovered (`discover_runs`).

Follows seed 002 (`limit`, `logName`, `logGroup`) and the open-source
server's `/api/runs/list` (API_NOTES.md) for discovery.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt, SecretStr, model_validator

from exporter.config.source import SourceConfigBase
from exporter.config.types import Duration

METRICS_PATH = "/api/runs/metrics"
LIST_PATH = "/api/runs/list"
LIST_PAGE_SIZE = 200  # the server's maximum
MAX_LIST_PAGES = 100  # 20,000 runs; beyond that discovery logs and uses what it has


class PlutoConfig(SourceConfigBase):
    """`type = "pluto"`: one target per run, named or discovered."""

    sample: ClassVar[dict[str, Any]] = {"project": "research", "run_ids": [4101, 4105]}

    type: Literal["pluto"] = Field(description="Pluto (mlop) training runs")
    api_key: SecretStr | None = Field(default=None, description="API key, sent as `Authorization: Bearer <key>`")
    project: str = Field(min_length=1, description="the project (projectName)")
    run_ids: list[PositiveInt] | None = Field(
        default=None, min_length=1, description="runs to follow, each one target; give this or discover_runs")
    discover_runs: bool = Field(
        default=False, description="follow every RUNNING run of the project and those finished within "
                                   "discover_finished_within, listed every interval")
    discover_finished_within: Duration = Field(
        default=3600.0, description="how long a finished run is still followed (discover_runs)")
    log_group: str | None = Field(default=None, min_length=1, examples=["train"],
                                  description="only metrics of this group (logGroup); default: all")
    log_names: list[str] | None = Field(default=None, min_length=1, examples=[["train/loss", "val/loss"]],
                                        description="only these metrics (logName), one request each per poll")
    limit: int = Field(default=2000, ge=1, le=10_000, description="points per metric per request; keep it above "
                                                                  "twice the points a metric gains per interval")
    max_requests_per_poll: int = Field(default=50, ge=1, le=10_000,
                                       description="bound on the requests of one poll of one run")

    @model_validator(mode="after")
    def _runs_named_once(self) -> PlutoConfig:
        if self.run_ids is not None and self.discover_runs:
            raise ValueError("give either run_ids or discover_runs = true, not both")
        if self.run_ids is None and not self.discover_runs:
            raise ValueError("give run_ids = [...] or discover_runs = true")
        if self.log_names is not None and any(not name for name in self.log_names):
            raise ValueError("log_names may not contain an empty name")
        return self

    def target_ids(self) -> list[str]:
        return [str(run) for run in dict.fromkeys(self.run_ids or [])]

