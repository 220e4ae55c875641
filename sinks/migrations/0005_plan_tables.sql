-- The plan catalog in SQL, so dashboards and Grafana alert rules can compute expected, target and
-- status next to the events. Written by sinks/plan_tables.py (`highland stack up`, `highland
-- dashboards publish`) from catalog/data and catalog/trajectory.py; never edited by hand.
--
-- Versioned, so a rewrite is exact without relying on merges: every sync writes all rows under a
-- `version` (the SHA-256 of their content) and only THEN records that version in plan_versions.
-- Readers use the *_current views: the rows of the newest recorded version, read with FINAL so a
-- sync repeated after a crash (same version, same rows inserted twice) still counts once.
-- seq orders the syncs (the previous maximum + 1): wall-clock seconds could tie.
CREATE TABLE IF NOT EXISTS {db}.plan_versions
(
    version String,
    seq UInt64,
    synced_at DateTime,
    indicators UInt32,
    trajectory_rows UInt64
)
ENGINE = MergeTree
ORDER BY (seq, version);

-- One row per indicator and version. Absent numbers are 0 with a has_* flag (plain Float64 keeps
-- the arithmetic identical on 18.16 and current ClickHouse: docs/clickhouse-dialect.md,
-- "plain-float64"). path_base / path_base_year: where the plan's path starts (the baseline, or 0 at
-- the end of the plan's baseline year). on_track / at_risk: the thresholds in force (the
-- indicator's own, else the plan's).
CREATE TABLE IF NOT EXISTS {db}.plan_indicators
(
    version String,
    indicator String,
    name_zh String,
    name_en String,
    section String,
    unit String,
    kind String,
    direction String,
    trajectory String,
    baseline Float64,
    has_baseline UInt8,
    path_base Float64,
    path_base_year UInt16,
    target Float64,
    has_target UInt8,
    target_year UInt16,
    annual_growth Float64,
    on_track Float64,
    at_risk Float64,
    agency String,
    cadence_days UInt32,
    regional UInt8
)
ENGINE = ReplacingMergeTree
ORDER BY (version, indicator);

-- expected(D) for every plan day, as catalog/trajectory.py computes it (has_expected = 0 for growth
-- targets, whose plan number depends on the previous year's actual and is computed in SQL from
-- year_fraction). position = p(D), the plan years elapsed since the end of the baseline year.
CREATE TABLE IF NOT EXISTS {db}.plan_trajectory
(
    version String,
    indicator String,
    day Date,
    expected Float64,
    has_expected UInt8,
    year_fraction Float64,
    position Float64
)
ENGINE = ReplacingMergeTree
ORDER BY (version, indicator, day);

CREATE TABLE IF NOT EXISTS {db}.plan_districts
(
    version String,
    district String,
    name_zh String,
    name_en String
)
ENGINE = ReplacingMergeTree
ORDER BY (version, district);

-- The newest recorded version wins; a tie on seq (two syncs at once) is broken by the version
-- string, so every reader picks the same one.
CREATE VIEW IF NOT EXISTS {db}.plan_indicators_current AS
SELECT indicator, name_zh, name_en, section, unit, kind, direction, trajectory, baseline, has_baseline,
       path_base, path_base_year, target, has_target, target_year, annual_growth, on_track, at_risk,
       agency, cadence_days, regional
FROM {db}.plan_indicators FINAL
WHERE version = (SELECT argMax(version, (seq, version)) FROM {db}.plan_versions);

CREATE VIEW IF NOT EXISTS {db}.plan_trajectory_current AS
SELECT indicator, day, expected, has_expected, year_fraction, position
FROM {db}.plan_trajectory FINAL
WHERE version = (SELECT argMax(version, (seq, version)) FROM {db}.plan_versions);

CREATE VIEW IF NOT EXISTS {db}.plan_districts_current AS
SELECT district, name_zh, name_en
FROM {db}.plan_districts FINAL
WHERE version = (SELECT argMax(version, (seq, version)) FROM {db}.plan_versions);
