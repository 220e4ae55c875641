"""Where the tables are: one server, or a cluster of shards behind Distributed tables.

Statements that read or write the project's tables differ in three ways between the two, and this
object answers all three, so no SQL builder takes a ``cluster`` flag or an ``in_`` string:
- how a row is tested against a set built from this connection's session tables (``membership``):
  on a cluster the set must travel to the shards with the query (``GLOBAL IN``); on one server
  ClickHouse 18.16 uses the primary key for a plain ``IN`` only (docs/clickhouse-dialect.md,
  "global-in");
- which table a mutation (``ALTER ... DELETE``) targets: the shard-local table, on every node;
- the ``ON CLUSTER`` clause of such a statement.
And it does the two things a session on a cluster needs before it reads what was written
(docs/streams.md, "On a cluster: reading one's own writes"), which on one server are nothing:
``open_session`` and ``await_replicas``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from highland.sinks import cluster as cluster_layout
from highland.sinks import replicas
from highland.sinks.client import CLUSTER_SESSION
from highland.sinks.tables import Table

from highland.settings import Settings


@dataclass(frozen=True)
class Topology:
    cluster: str | None = None
    replica_wait_s: float = 30.0  # how long ``await_replicas`` waits for a replica to catch up

    @classmethod
    def of(cls, settings: Settings) -> Topology:
        return cls(settings.clickhouse_cluster, settings.clickhouse_replica_wait_seconds)

    @property
    def membership(self) -> str:
        return "GLOBAL IN" if self.cluster else "IN"

    def mutable(self, db: str, table: str) -> str:
        """The table, with its ON CLUSTER clause, that an ALTER on ``table`` must name."""
        if self.cluster is None:
            return f"{db}.{table}"
        return f"{db}.{cluster_layout.local_name(table)} ON CLUSTER {self.cluster}"

    def open_session(self, client: Any) -> None:
        """Make the cluster session settings (sinks/client.py) the session's own, not only each
        query's: 18.16 runs the SELECT of ``CREATE TEMPORARY TABLE ... AS SELECT`` with the session's
        settings, so without this the writer's reads went to a random replica of each shard
        (docs/clickhouse-dialect.md, "session-settings"). A reconnection loses them, and the
        session's temporary tables with them: the next step fails and the write starts again here."""
        if self.cluster is not None:
            client.execute("SET " + ", ".join(f"{name} = {value!r}" for name, value in CLUSTER_SESSION.items()))

    def await_replicas(self, client: Any, db: str, tables: Iterable[Table]) -> None:
        """Return once every replica a read of ``tables`` could reach holds every INSERT into them
        that returned before this call (sinks/replicas.py); on one server at once."""
        if self.cluster is not None:
            replicas.synchronize(client, self.cluster, db, [cluster_layout.data_table(t) for t in tables],
                                 self.replica_wait_s)


SINGLE_NODE = Topology()
