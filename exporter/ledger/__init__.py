"""Period ledgers: monotonic counters from overlapping per-period vendor counts.

- `period`: the ledger itself (why it exists, and its rules);
- `state`: its state files under `[state] dir`;
- `registry`: one ledger per target, and the samples a source exports from it.
"""
