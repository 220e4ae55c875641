"""Streams: the Faust worker that validates, deduplicates and writes events to ClickHouse."""
