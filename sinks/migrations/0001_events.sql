-- Every accepted event, one row per delivery. Re-deliveries and replays may add copies; every
-- query deduplicates by (agency, event_id) itself (argMax over revision), so numbers are exact
-- whether or not background merges have run. ReplacingMergeTree only saves space.
CREATE TABLE IF NOT EXISTS {db}.events
(
    agency String,
    event_id String,
    revision UInt32,
    indicator String,
    region String,
    value Float64,
    unit String,
    raw_value Float64,
    observed_at DateTime,
    received_at DateTime,
    kafka_partition UInt16,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (agency, event_id, revision);
