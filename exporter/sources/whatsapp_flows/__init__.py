"""WhatsApp Flows endpoint metrics (seed 001; Graph quirks from API_NOTES.md).

For each flow (one target) a poll calls, once per configured metric and one
after the other (Graph throttles per app and per business account),

    GET /{api_version}/{flow_id}?fields=metric.name(NAME).granularity(HOUR).since(2026-05-26).until(2026-05-29)

and exports, with HOUR or DAY granularity through the period ledger:

    whatsapp_flow_endpoint_requests_total{flow_id="1234"} 31415
    whatsapp_flow_endpoint_request_errors_total{flow_id="1234",error_type="timeout_error"} 377
    whatsapp_flow_endpoint_request_error_ratio{flow_id="1234"} 0.041
    whatsapp_flow_endpoint_request_duration_seconds_bucket{flow_id="1234",le="1.0"} 17280
    whatsapp_flow_endpoint_availability_checks_total{flow_id="1234",result="failed"} 12
    whatsapp_flow_metrics_insufficient_data{flow_id="1234",metric="ENDPOINT_REQUEST_COUNT"} 0

Readings of the doc:
- `until` is sent as tomorrow's UTC date. Whether `until` is inclusive is not
  said: if it is exclusive, today's buckets (UTC and Pacific alike, as the UTC
  date is never behind the Pacific one) are still inside; if inclusive,
  tomorrow simply has no data yet. Sending today's date would lose today's
  buckets under the exclusive reading.
- `since` is the UTC date `lookback` ago, and the ledger's window starts at
  that date's UTC midnight: every bucket the server can return for it (UTC
  hours from that midnight, Pacific days from 07:00/08:00 UTC) starts at or
  after it, so none is mistaken for a settled one. `lookback` is clamped to the
  oldest date the API allows (30 days for HOUR, 90 for DAY).
- Latency keys are ceilings in seconds: `"N"` goes into every `le` bucket
  >= N, `"10+"` only into `+Inf`. A key of another shape is counted in `+Inf`
  only (the request happened; its latency is unknown) and logged once.
- LIFETIME: `since` is left out, so the server uses its oldest allowed date,
  and the single data point is the running total: exported as the counter
  value directly, with the point's timestamp (the start of its period) as
  `_created`. A total the vendor computes over a sliding window can go down;
  `_created` then moves too, which is how OpenMetrics marks a reset.
- Several entries with one key in a point, or several points with one
  timestamp, are added up.

Graph errors are read from `error.code`, not the HTTP status (throttling has
been seen as 400 and as 429); see `classify_error`.
"""

from exporter.sources.whatsapp_flows.config import WhatsAppFlowsConfig, effective_lookback, window
from exporter.sources.whatsapp_flows.families import latency_buckets
from exporter.sources.whatsapp_flows.graph import InsufficientData, classify_error
from exporter.sources.whatsapp_flows.source import WhatsAppFlowsSource

__all__ = ["InsufficientData", "WhatsAppFlowsConfig", "WhatsAppFlowsSource", "classify_error",
           "effective_lookback", "latency_buckets", "window"]
