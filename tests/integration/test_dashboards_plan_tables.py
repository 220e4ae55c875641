"""The plan tables of migration 0005 on ClickHouse 18.16: written by sync_plan_tables, exact without
merges, rewritten when the catalog changes, untouched when it does not."""

from __future__ import annotations

from datetime import date

import pytest
from highland.catalog.loader import default_catalog
from highland.catalog.models import Catalog
from highland.catalog.trajectory import expected
from highland.sinks.client import connect
from highland.sinks.plan_tables import plan_rows, sync_plan_tables

from highland.settings import Settings

pytestmark = pytest.mark.integration


def _counts(client: object, db: str) -> tuple[int, int, int]:
    return tuple(client.execute(f"SELECT count() FROM {db}.{view}")[0][0]  # type: ignore[attr-defined]
                 for view in ("plan_indicators_current", "plan_trajectory_current", "plan_districts_current"))


def _with_target(catalog: Catalog, code: str, value: float) -> Catalog:
    """The same catalog with one indicator's target changed."""
    indicators = tuple(i.model_copy(update={"target": i.target.model_copy(update={"value": value})})
                       if i.code == code else i for i in catalog.indicators)
    return catalog.model_copy(update={"indicators": indicators})


def test_stack_up_synced_the_plan_into_the_default_database(stack: Settings):
    catalog = default_catalog()
    client = connect(stack)
    assert _counts(client, stack.clickhouse_database)[0] == len(catalog.indicators)


def test_sync_writes_the_catalog_once_and_is_a_no_op_when_unchanged(isolated: Settings):
    catalog, client, db = default_catalog(), connect(isolated), isolated.clickhouse_database
    assert _counts(client, db) == (0, 0, 0)  # nothing current before the first sync
    first = sync_plan_tables(client, db, catalog)
    assert first.changed and first.trajectory_rows == len(catalog.indicators) * 2192  # 2015-01-01..2020-12-31
    assert _counts(client, db) == (len(catalog.indicators), first.trajectory_rows, len(catalog.districts))
    again = sync_plan_tables(client, db, catalog)
    assert not again.changed and again.version == first.version
    assert client.execute(f"SELECT count() FROM {db}.plan_trajectory") == [(first.trajectory_rows,)]


def test_trajectory_holds_catalog_expected_values(isolated: Settings):
    catalog, client, db = default_catalog(), connect(isolated), isolated.clickhouse_database
    sync_plan_tables(client, db, catalog)
    ind = catalog.indicator("telecom_business_volume")
    assert ind is not None
    rows = dict(client.execute(f"SELECT day, expected FROM {db}.plan_trajectory_current "
                               "WHERE indicator = 'telecom_business_volume' "
                               "AND day IN (toDate('2016-02-29'), toDate('2020-12-31'))"))
    assert rows[date(2016, 2, 29)] == pytest.approx(expected(ind, date(2016, 2, 29)), rel=1e-12)
    assert rows[date(2020, 12, 31)] == pytest.approx(1100.0)
    growth = client.execute(f"SELECT countIf(has_expected = 0) FROM {db}.plan_trajectory_current "
                            "WHERE indicator = 'agri_ecommerce_turnover'")
    assert growth == [(2192,)]  # a growth target has no plan number without last year's actual


def test_a_changed_catalog_becomes_current_and_the_old_version_goes(isolated: Settings):
    catalog, client, db = default_catalog(), connect(isolated), isolated.clickhouse_database
    first = sync_plan_tables(client, db, catalog)
    changed = _with_target(catalog, "telecom_business_volume", 1234.0)
    second = sync_plan_tables(client, db, changed)
    assert second.changed and second.version != first.version
    target = f"SELECT target FROM {db}.plan_indicators_current WHERE indicator = 'telecom_business_volume'"
    assert client.execute(target) == [(1234.0,)]
    assert _counts(client, db)[0] == len(catalog.indicators)  # no mix of versions
    back = sync_plan_tables(client, db, catalog)  # rolling back rewrites the old version's rows
    assert back.changed and back.version == first.version
    assert client.execute(target) == [(1100.0,)]
    assert _counts(client, db) == (len(catalog.indicators), first.trajectory_rows, len(catalog.districts))


def test_a_sync_that_died_half_way_is_invisible_and_repaired_exactly(isolated: Settings):
    catalog, client, db = default_catalog(), connect(isolated), isolated.clickhouse_database
    sync_plan_tables(client, db, catalog)
    changed = _with_target(catalog, "telecom_business_volume", 999.0)
    rows = plan_rows(changed)
    # a crash after some rows of the new version, before it was recorded
    client.execute(f"INSERT INTO {db}.plan_indicators (version, indicator, target) VALUES",
                   [(rows.version, "telecom_business_volume", 999.0)])
    target = f"SELECT target FROM {db}.plan_indicators_current WHERE indicator = 'telecom_business_volume'"
    assert client.execute(target) == [(1100.0,)]
    sync_plan_tables(client, db, changed)  # inserts the same row again: FINAL keeps one
    assert client.execute(target) == [(999.0,)]
    assert _counts(client, db)[0] == len(catalog.indicators)


def test_publish_syncs_the_plan_before_touching_grafana(isolated: Settings):
    from highland.dashboards.publish import sync_plan

    assert sync_plan(isolated).startswith(f"plan tables {isolated.clickhouse_database}: written")
    assert sync_plan(isolated).startswith(f"plan tables {isolated.clickhouse_database}: unchanged")
