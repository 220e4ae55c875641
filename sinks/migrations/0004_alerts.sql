-- Alerts: status changes and stale / fresh-again feeds. alert_id is derived from the indicator,
-- the transition and the previous alert of the same indicator and kind, so two evaluators that see
-- the same change (a leader fail-over) write the same id and the table keeps one row.
CREATE TABLE IF NOT EXISTS {db}.alerts
(
    alert_id String,
    kind String,
    seq UInt64,
    indicator String,
    agency String,
    old_status String,
    new_status String,
    actual Nullable(Float64),
    expected Nullable(Float64),
    as_of Date,
    detail String,
    created_at DateTime
)
ENGINE = ReplacingMergeTree
ORDER BY alert_id;
