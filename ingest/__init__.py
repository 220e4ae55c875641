"""Ingest: the metric-event contract, its validator, producers, `highland push` and the HTTP gateway."""
