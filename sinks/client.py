"""ClickHouse connections built from settings (one place that knows hosts, users and passwords)."""

from __future__ import annotations

from clickhouse_driver import Client

from highland.settings import Settings

# On a cluster, every session reads its own writes, and a later reader sees every INSERT that returned
# before it began (what sinks/writer.py's exactness rests on; docs/streams.md, "On a cluster"):
# - insert_distributed_sync: an INSERT into a Distributed table returns once every shard stored its
#   rows (by default it returns once they are queued on the initiator, sent seconds later);
# - load_balancing in_order, prefer_localhost_replica 0: every session, on every initiator, writes and
#   reads each shard on the same replica (the first one up in the cluster's config), not on a random
#   one that may not have fetched the part yet.
# - distributed_product_mode global: a sub-query over a Distributed table inside a distributed query
#   (the per-day series' rebuild joins events with itself) runs once and travels with the query
#   instead of being refused (18.16's default, "deny"); exact whatever the sharding.
# The read-only user may set no setting at all (readonly=1) and writes nothing, so it gets none.
CLUSTER_SESSION = {"insert_distributed_sync": 1, "load_balancing": "in_order", "prefer_localhost_replica": 0,
                   "distributed_product_mode": "global"}


def connect(settings: Settings, database: str | None = None, *, reader: bool = False) -> Client:
    """A native-protocol client; ``reader=True`` uses the read-only dashboards user."""
    user = settings.clickhouse_reader_user if reader else settings.clickhouse_user
    secret = settings.clickhouse_reader_password if reader else settings.clickhouse_password
    return Client(
        host=settings.clickhouse_host,
        port=settings.clickhouse_port,
        user=user,
        password=secret.get_secret_value(),
        database=database or settings.clickhouse_database,
        connect_timeout=5,
        send_receive_timeout=60,
        settings={"use_numpy": False, **_session(settings, reader)},
    )


def _session(settings: Settings, reader: bool) -> dict[str, object]:
    return CLUSTER_SESSION if settings.clickhouse_cluster and not reader else {}
