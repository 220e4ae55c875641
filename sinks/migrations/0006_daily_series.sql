-- Plan numbers without scanning every event: two tables the writer keeps (sinks/daily_series.py).
--
-- `observations`: every stored revision of every event, ordered by series and plan-local day, with
-- sign +1; a revision superseded by a newer one gets a second row with sign -1 in ITS day. A
-- revision is live when none of its rows is -1, so copies of a row (two writers racing in a
-- rebalance) change nothing. Plain MergeTree on purpose: rows are never removed, so the row count
-- of a (indicator, region, day) only grows and can version what is derived from it. Small granules:
-- the writer looks rows up by (indicator, region, day, observed_at).
CREATE TABLE IF NOT EXISTS {db}.observations
(
    indicator String,
    region String,
    day Date,
    observed_at DateTime,
    agency String,
    event_id String,
    revision UInt32,
    value Float64,
    sign Int8
)
ENGINE = MergeTree
PARTITION BY toYear(day)
ORDER BY (indicator, region, day, observed_at, agency, event_id, revision)
SETTINGS index_granularity = 1024;

-- One row per (indicator, region, plan-local day), kept by the writer for every day a batch touched:
-- the live observations' count and sum, and the day's closing value (latest by observed_at, then
-- revision, then event_id: CONTRACT.md §2; the close_* columns are that observation's key).
-- `version` is the number of observation rows the row reflects, so a later state always wins; read
-- with FINAL, exact whether or not merges ran. A day whose observations were all revised away keeps
-- a row with events = 0.
CREATE TABLE IF NOT EXISTS {db}.daily_series
(
    indicator String,
    region String,
    day Date,
    events UInt64,
    value_sum Float64,
    close_value Float64,
    close_observed_at DateTime,
    close_revision UInt32,
    close_event_id String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (indicator, region, day);
