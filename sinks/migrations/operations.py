"""Typed migration operations, each rendered for one server or for a cluster (sinks/cluster.py).

An operation knows its statements for both targets (:meth:`statements`) and applies itself
(:meth:`apply`); :class:`RunData` is the one kind that runs code instead: a migration's data step,
written next to the statements it belongs to. Every operation may run again after a crash (DDL with
IF [NOT] EXISTS, data steps idempotent): a migration's version is recorded only after all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from highland.sinks import cluster as on_cluster
from highland.sinks.tables import MaterializedView, Table, View, auth_database
from highland.sinks.topology import Topology


class Operation(Protocol):
    def statements(self, db: str, topology: Topology, version: int) -> list[str]:
        """The DDL this operation runs (none for a data step)."""
        ...

    def apply(self, client: Any, db: str, topology: Topology, version: int) -> None: ...


class _Statements:
    """An operation that is only its statements."""

    def statements(self, db: str, topology: Topology, version: int) -> list[str]:
        raise NotImplementedError

    def apply(self, client: Any, db: str, topology: Topology, version: int) -> None:
        for sql in self.statements(db, topology, version):
            client.execute(sql)


@dataclass(frozen=True)
class CreateTable(_Statements):
    """The table as its description stood at this migration (columns added later are left out)."""

    table: Table

    def statements(self, db: str, topology: Topology, version: int) -> list[str]:
        if topology.cluster:
            return on_cluster.create_table(self.table, db, topology.cluster, version)
        return [self.table.create(db, version)]


@dataclass(frozen=True)
class RecreateDistributed(_Statements):
    """On a cluster, a sharded table's Distributed table dropped and created again as rendered now
    (its rows live in the shards' tables, which stay); nothing on one server."""

    table: Table

    def statements(self, db: str, topology: Topology, version: int) -> list[str]:
        if not topology.cluster:
            return []
        _, distributed = on_cluster.create_table(self.table, db, topology.cluster, version)
        return [f"DROP TABLE IF EXISTS {self.table.qualified(db)} ON CLUSTER {topology.cluster}", distributed]


@dataclass(frozen=True)
class CreateMaterializedView(_Statements):
    view: MaterializedView

    def statements(self, db: str, topology: Topology, version: int) -> list[str]:
        if topology.cluster:
            return on_cluster.create_materialized_view(self.view, db, topology.cluster)
        return [self.view.create(db)]


@dataclass(frozen=True)
class CreateView(_Statements):
    view: View

    def statements(self, db: str, topology: Topology, version: int) -> list[str]:
        if topology.cluster:
            return on_cluster.create_view(self.view, db, topology.cluster)
        return [self.view.create(db)]


@dataclass(frozen=True)
class AddColumn:
    """A column of ``table``'s description whose ``since`` is this migration. Each altered table is
    looked up first and a re-run skips what is there (docs/clickhouse-dialect.md, "add-column"); on a
    cluster as this node sees it: an ON CLUSTER ALTER returns once every node ran it."""

    table: Table
    column: str

    def targets(self, db: str, topology: Topology, version: int) -> list[tuple[str, str]]:
        """(the table altered, the ALTER), in order."""
        column = self.table.column(self.column)
        if column.since != version:
            raise ValueError(f"{self.table.name}.{self.column}: added by migration {version}, so its "
                             f"description must say since={version} (it says {column.since})")
        if topology.cluster:
            return on_cluster.add_column(self.table, column, db, topology.cluster)
        return [(self.table.name, self.table.add_column(db, column))]

    def statements(self, db: str, topology: Topology, version: int) -> list[str]:
        return [sql for _, sql in self.targets(db, topology, version)]

    def apply(self, client: Any, db: str, topology: Topology, version: int) -> None:
        for table, sql in self.targets(db, topology, version):
            [(present,)] = client.execute(
                "SELECT count() FROM system.columns WHERE database = %(db)s AND table = %(table)s "
                "AND name = %(column)s", {"db": self.table.database(db), "table": table, "column": self.column})
            if not present:
                client.execute(sql)


@dataclass(frozen=True)
class DropTable(_Statements):
    table: Table

    def statements(self, db: str, topology: Topology, version: int) -> list[str]:
        if topology.cluster:
            return on_cluster.drop_table(self.table, db, topology.cluster)
        return [f"DROP TABLE IF EXISTS {self.table.qualified(db)}"]


@dataclass(frozen=True)
class CreateAuthDatabase(_Statements):
    """The served database's auth database (sinks/tables.py, ``auth_database``): the token tables'."""

    def statements(self, db: str, topology: Topology, version: int) -> list[str]:
        if topology.cluster:
            return on_cluster.create_database(auth_database(db), topology.cluster)
        return [f"CREATE DATABASE IF NOT EXISTS {auth_database(db)}"]


DataStep = Callable[[Any, str, Topology], None]


@dataclass(frozen=True)
class RunData:
    """Code a migration needs besides DDL: moving rows, filling a new table. Idempotent (a crash
    re-runs it), run with no worker writing, as every migration is."""

    step: DataStep

    def statements(self, db: str, topology: Topology, version: int) -> list[str]:
        return []

    def apply(self, client: Any, db: str, topology: Topology, version: int) -> None:
        self.step(client, db, topology)


@dataclass(frozen=True)
class Migration:
    version: int  # recorded in schema_migrations: never renumber one that has shipped
    name: str  # NNNN_what, recorded with it
    operations: tuple[Operation, ...]

    def __post_init__(self) -> None:
        if not self.name.startswith(f"{self.version:04d}_"):
            raise ValueError(f"migration {self.name}: its name starts with its version, {self.version:04d}_")

    def statements(self, db: str, topology: Topology) -> list[str]:
        """Every DDL statement of this migration, in order (its data steps left out)."""
        return [sql for op in self.operations for sql in op.statements(db, topology, self.version)]

    def apply(self, client: Any, db: str, topology: Topology) -> None:
        for op in self.operations:
            op.apply(client, db, topology, self.version)
