-- `observations` (migration 0006) again, ordered by numbers: what the writer scans for every batch.
--
-- The writer counts the rows of each series-day it touches (twice per batch) and looks up the
-- batch's rows among them. ClickHouse 18.16 tests and groups strings much slower than numbers
-- (docs/clickhouse-dialect.md, "string-keys"; the runs: docs/benchmarks.md, session 5).
-- `series` = cityHash64(indicator, region) and `key` = cityHash64(agency, event_id) are computed by
-- the server on every INSERT (MATERIALIZED: no writer can set them wrong). Two series sharing a hash
-- would only share a row count: the writer then sees rows it did not expect and recomputes the day
-- from its own rows (sinks/daily_series.py), so a collision costs time, never a wrong number.
-- The rows of the old table are copied by the migration's data step, which then drops it.
CREATE TABLE IF NOT EXISTS {db}.observations_by_series
(
    indicator String,
    region String,
    day Date,
    observed_at DateTime,
    agency String,
    event_id String,
    revision UInt32,
    value Float64,
    sign Int8,
    series UInt64 MATERIALIZED cityHash64(indicator, region),
    key UInt64 MATERIALIZED cityHash64(agency, event_id)
)
ENGINE = MergeTree
PARTITION BY toYear(day)
ORDER BY (series, day, observed_at, key, revision, sign)
SETTINGS index_granularity = 1024;
