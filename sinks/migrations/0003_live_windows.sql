-- Live windows: what is ARRIVING now, per agency / indicator / region, in tumbling 1-minute and
-- 1-hour windows of the worker's receive time. Fed by materialized views from `events`, in the
-- same INSERT: the worker stores each (agency, event_id, revision) once (it checks what is
-- already stored before inserting), so a re-delivered batch is not counted twice. Revisions count
-- as arrivals. SummingMergeTree merges lazily: always read with sum() ... GROUP BY.
-- Plan totals never come from here; they come from `events`.
CREATE TABLE IF NOT EXISTS {db}.event_windows_1m
(
    window_start DateTime,
    agency String,
    indicator String,
    region String,
    events UInt64,
    value_sum Float64
)
ENGINE = SummingMergeTree
ORDER BY (window_start, agency, indicator, region);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.event_windows_1m_mv TO {db}.event_windows_1m AS
SELECT toStartOfMinute(received_at) AS window_start, agency, indicator, region,
       count() AS events, sum(value) AS value_sum
FROM {db}.events
GROUP BY window_start, agency, indicator, region;

CREATE TABLE IF NOT EXISTS {db}.event_windows_1h
(
    window_start DateTime,
    agency String,
    indicator String,
    region String,
    events UInt64,
    value_sum Float64
)
ENGINE = SummingMergeTree
ORDER BY (window_start, agency, indicator, region);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.event_windows_1h_mv TO {db}.event_windows_1h AS
SELECT toStartOfHour(received_at) AS window_start, agency, indicator, region,
       count() AS events, sum(value) AS value_sum
FROM {db}.events
GROUP BY window_start, agency, indicator, region;
