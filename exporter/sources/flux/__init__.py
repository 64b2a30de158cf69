"""Flux metrics (seed 003; the open-source server's dialect from API_NOTES.md).

One target per source: the Flux account its API key belongs to. A poll calls

    GET /api/v1/metrics                       (discovery: every poll when `metrics` is absent)
    GET /api/v1/metrics/{name}                (type of a configured metric the list lacks; once)
    GET /api/v1/metrics/{name}/query?from=…&to=…&interval=1m&aggregation=p50,p95,…
                                     [&group_by=tags.k][&tags[k]=v]

and exports, per Flux metric type (`<n>` the sanitised name, labels `account`
plus the `group_by` tags):

    flux_users_online{account="prod",region="eu"} 231.4                        gauge: `last`
    flux_users_online_max{account="prod",region="eu"} 250.1                     …and min/max/avg when asked
    flux_api_requests_total{account="prod",endpoint="/users"} 123456            counter: per-bucket `sum`, period ledger
    flux_api_response_time_seconds{account="prod",quantile="0.95"} 0.239        distribution: a summary…
    flux_api_response_time_seconds_count{account="prod"} 98765                  …its _count/_sum through the ledger
    flux_api_response_time_min_seconds{account="prod"} 0.012                    …plus min/max/avg gauges
    flux_daily_active_users_cardinality{account="prod",plan="pro"} 17           set: `count`
    flux_api_info{account="prod",dialect="documented"} 1
    flux_queries_planned{account="prod"} 7
    flux_queries_completed{account="prod"} 7

Gauges, quantiles, min/max/avg and cardinalities come from the latest
*complete* bucket (the one before the bucket `now` is in); a gauge whose latest
complete bucket is empty keeps the newest earlier value in the window (a gauge
holds its value), a distribution's quantiles and min/max/avg are then absent
(nothing was observed) and a set's cardinality is 0. Counters and a
distribution's `_count`/`_sum` add every bucket, the open one included, through
the period ledger.

**Dialects.** The first query of a source is a probe: the documented form
(`from`/`to`/`interval`) with a single aggregation (the open-source server
takes one per request, so a multi-aggregation probe could fail for a reason
that says nothing about the dialect). `{"data": {"series"|"groups": …}}` means
documented; `{"data": [...]}` means open source, and the probe is asked again
as `since`/`bucket` (the server ignored `from`/`to`/`interval`). When the
metric list came first and had the open-source shape (`{"metrics": [...]}`),
the probe is sent in that form instead. Until a probe succeeds the metrics are
queried one at a time, each a probe; afterwards up to four at once. The
dialect is logged once and exported as `flux_api_info`; an answer in the other
shape later is `invalid_response`. In the open-source dialect each
aggregation is its own request (a distribution's `count` comes free with every
point), `group_by` is ignored by the server (logged once; the series then
carry no group labels), and `since` reaches one minute further back than the
window so clock skew cannot cut the first bucket we keep.

**Budget.** Every request (list, lookups, queries, retries) takes a token of
the budget shared by all sources using the same key on the same server
(`exporter.sources.kit.ratelimit`), `rate_limit.queries` per `rate_limit.per`. A cycle that
needs more than fits in one interval takes longer: it is logged as a warning
at start (configured metrics) or when discovered, `flux_queries_planned` and
`flux_queries_completed` show each cycle, and unless `timeout` /
`max_staleness` are set, the poll deadline becomes `interval + 2 × cycle` and
the staleness limit `3 × (interval + cycle)` (before the first list of a
discovering source, the deadline is max(interval, 10 min)). The poll stops
sending shortly before its deadline and returns what it has: metrics not
reached keep their previous values, are counted under `timeout` and come
first in the next poll. A 429
stops every holder of the budget for its `Retry-After` (a full window without
one), and the request is retried by the HTTP client; a 429 it gives up on is
counted under `rate_limited` for that metric.

**Errors.** One metric's failure (404, 400, invalid answer, 429) is counted
under its reason and the others go on; a 401/403 fails the poll, and so does
a poll in which no metric could be read. The window of each poll reaches back
to the start of the previous successful poll (at most `max_staleness` back),
plus `lookback` buckets, so a cycle longer than `lookback` buckets loses no
bucket from the counters.

**Names.** Two Flux metrics whose families would share a Prometheus name
(`api.response_time` and `api-response_time`, or `a` with `_min` and a gauge
`a.min`) are never merged: in a configured list, equal sanitised names are a
config error; otherwise (discovered metrics, derived names) both are skipped
with one ERROR log. A tag key that sanitises to `account` or `quantile`
becomes `tag_account` / `tag_quantile`.

Readings of the doc: `group_by` with several keys is sent comma-separated
(`group_by=tags.a,tags.b`, like `aggregation`) and a group's name is read as
the values joined by ","; a point holds `value` for a single aggregation and
one field per aggregation otherwise; units are never guessed from names (nor
taken from the open-source list's free-text `unit`): `unit = "ms"` in config
divides by 1000 and names the family `_seconds`.

The package, by concern: `config` (the `type = "flux"` model and the doc's
tables), `families` (what a metric exports; its samples), `dialects` (asking
and reading each wire dialect; which one the server speaks), `plan` (which
metrics a poll queries, in which order, at what request cost), `source`
(`FluxSource`: the poll, its budget and deadline) and `notes` (its log lines).
"""

from __future__ import annotations

from exporter.sources.flux.config import FluxConfig, FluxMetricConfig, RateLimitConfig
from exporter.sources.flux.source import FluxSource

__all__ = ["FluxConfig", "FluxMetricConfig", "FluxSource", "RateLimitConfig"]
