"""Pluto (mlop) run metrics: training curves as live gauges, fetched incrementally (seed 002).

For each run (one target) a poll calls

    GET /api/runs/metrics?runId=R&projectName=P&limit=L[&logName=N][&logGroup=G][&stepMin=S][&stepMax=T]

and, with `discover_runs = true`, discovery pages through

    GET /api/runs/list?projectName=P&limit=200&offset=O

It exports, for example:

    pluto_run_metric_value{project="research",run_id="4101",log_group="train",log_name="train/loss"} 0.1443
    pluto_run_metric_step{project="research",run_id="4101",log_group="train",log_name="train/loss"} 14400
    pluto_run_metric_timestamp_seconds{project="research",run_id="4101",…,log_name="train/loss"} 1.77999996e+09
    pluto_run_metric_nonfinite_points_total{project="research",run_id="4101",…,log_name="train/grad_norm"} 3
    pluto_run_request_budget_exhausted_total{project="research",run_id="4101"} 0
    pluto_run_info{project="research",run_id="4101",run_name="resnet50-baseline",status="RUNNING"} 1

Every point a poll found new is attached, with its own time, to its
`pluto_run_metric_value` sample (`Sample.history`) for push sinks; a backfill
(`history()`) walks a run's whole curve in the same windows.

Interpretations of the doc:
- An unknown run or project answers 200 with no rows: the poll succeeds with
  no series, it is not an error.
- `/api/runs/list`: a run is followed while its status is RUNNING, or when it
  finished within `discover_finished_within`. The finish time is
  `statusUpdated`, else `updatedAt`, else `createdAt` (a run created within the
  window certainly finished within it; older servers send only `createdAt`).
  Paging stops at a short page, at `total`, or at a page that adds no new run
  (a server that ignores `offset`).
- `pluto_run_info` (status and name) exists for discovered runs only: with
  `run_ids` the exporter never lists runs, so it does not know their status.

The package, by concern: `config` (the `type = "pluto"` model), `points`
(reading rows, runs and error bodies), `walk` (step windows until no answer
is sampled), `families` (what is exported) and `source` (`PlutoSource`: the
poll, per-run state, discovery, backfill).
"""

from __future__ import annotations

from exporter.sources.pluto.config import PlutoConfig
from exporter.sources.pluto.points import _parse_point_checked, classify_error, parse_point
from exporter.sources.pluto.source import PlutoSource

__all__ = ["PlutoConfig", "PlutoSource", "_parse_point_checked", "classify_error", "parse_point"]
