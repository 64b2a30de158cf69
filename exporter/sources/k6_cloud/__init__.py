"""k6 Cloud REST v2 test-run metrics (seed 004; quirks from API_NOTES.md).

For each test run (one target) a poll calls:

    GET /loadtests/v2/metrics?test_run_id=R&page=N&page_size=M     all metrics, paged
    GET /loadtests/v2/series?test_run_id=R&ids[]=..&method=STAT    latest series values
    GET /loadtests/v2/thresholds?test_run_id=R                      thresholds + their metrics
    GET /loadtests/v2/run-overviews?test_run_id=R                   run overview

and exports, for example:

    k6_http_req_duration_seconds{test_run_id="103054",stat="0.95",method="GET",url="https://test.k6.io/"} 0.213
    k6_http_reqs{test_run_id="103054",stat="rps",method="GET",status="200",url="https://test.k6.io/"} 41.5
    k6_cloud_threshold_failed{test_run_id="103054",threshold="p(95)<500",stat="0.95",metric="http_req_duration"} 0
    k6_cloud_run_checks{test_run_id="103054",state="succeeded"} 2

Interpretations of the doc (see also docs/metrics.md):
- `contains: "time"` values are milliseconds (k6 reports trends in ms); they are
  divided by 1000 and the family gets `_seconds`. `contains: "data"` values are
  bytes and get `_bytes`. Other `contains` values are exported as sent.
- A series' `method` (not the one we asked for) becomes the `stat` label, so a
  server that ignores `method=` still yields correctly labelled series.
- `values` may be empty (no sample), hold numbers or numeric strings, and are
  not guaranteed sorted: the point with the newest timestamp wins.
- Metric ids are ints or strings (`threshold_166100`); both are kept as strings.
- Thresholds name their run `testrun_id` in lists and `test_run_id` elsewhere;
  we never need either, the target id is the label.
- 410, or a 404 without k6's error envelope, means the endpoint itself is gone
  (the vendor deprecated v2 for v6): reason `retired`. A 404 with the envelope
  (code 3) is an unknown test run: reason `not_found`.
"""

from __future__ import annotations

from exporter.sources.k6_cloud.config import K6CloudConfig
from exporter.sources.k6_cloud.series import _newest, tag_labels
from exporter.sources.k6_cloud.source import K6CloudSource, classify_error

__all__ = ["K6CloudConfig", "K6CloudSource", "_newest", "classify_error", "tag_labels"]
