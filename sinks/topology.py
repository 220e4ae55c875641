"""Where the tables are: one server, or a cluster of shards behind Distributed tables.

Statements that read or write the project's tables differ in three ways between the two, and this
object answers all three, so no SQL builder takes a ``cluster`` flag or an ``in_`` string:
- how a row is tested against a set built from this connection's session tables (``membership``):
  on a cluster the set must travel to the shards with the query (``GLOBAL IN``); on one server
  ClickHouse 18.16 uses the primary key for a plain ``IN`` only (docs/clickhouse-dialect.md,
  "global-in");
- which table a mutation (``ALTER ... DELETE``) targets: the shard-local table, on every node;
- the ``ON CLUSTER`` clause of such a statement.
"""

from __future__ import annotations

from dataclasses import dataclass

from highland.sinks import cluster as cluster_layout

from highland.settings import Settings


@dataclass(frozen=True)
class Topology:
    cluster: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> Topology:
        return cls(settings.clickhouse_cluster)

    @property
    def membership(self) -> str:
        return "GLOBAL IN" if self.cluster else "IN"

    def mutable(self, db: str, table: str) -> str:
        """The table, with its ON CLUSTER clause, that an ALTER on ``table`` must name."""
        if self.cluster is None:
            return f"{db}.{table}"
        return f"{db}.{cluster_layout.local_name(table)} ON CLUSTER {self.cluster}"


SINGLE_NODE = Topology()
