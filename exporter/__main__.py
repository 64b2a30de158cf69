"""`python -m exporter` runs the same CLI as the `api-metrics-exporter` script."""

from exporter.cli import main

raise SystemExit(main())
