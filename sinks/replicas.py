"""Every replica holds what returned: ``SYSTEM SYNC REPLICA`` on each replica of a cluster's tables.

The writer's exactness rests on one premise (sinks/writer.py): a read that starts after an INSERT
returned sees that INSERT's rows, its own and another writer's. On a replicated cluster an INSERT
returns once one replica per shard stored its part and logged it in ZooKeeper; a read through a
Distributed table goes to *one* replica per shard, chosen by the initiator, and the other may not
have fetched the part yet (docs/clickhouse-dialect.md, "distributed-insert"). Routing every session
to the same replica (sinks/client.py) makes that rare, never impossible: the initiator moves to the
other replica when the first fails, and back when it recovers.

``synchronize`` closes it whatever replica a read reaches. An INSERT that returned is in its shard's
replication log, so a replica that has pulled the log and emptied its queue since holds it.
``SYSTEM SYNC REPLICA db.table`` does exactly that, on the server it is sent to. So it is sent to
every replica of the cluster, on a connection of its own to each (the addresses from the
initiator's ``system.clusters``), with the writer's credentials:
- a replica that cannot be connected to is skipped: it is down, so no read can reach it either;
- a replica that does not catch up within the bound raises :class:`ReplicaBehind`, an infrastructure
  failure that the worker's one retry rule (``sinks.poison.retryable``) retries: the part it lacks may
  sit on a replica that is down, and the read must wait for it, not miss it.
18.16's ``SYNC REPLICA`` has no working server-side bound (docs/clickhouse-dialect.md, "sync-replica"):
the bound is the connection's receive timeout, and the statement given up on keeps waiting on its
server until the replica caught up.

On one server nothing here runs (``Topology.await_replicas``, sinks/topology.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from clickhouse_driver import Client
from clickhouse_driver.errors import Error as ClickHouseError
from clickhouse_driver.errors import NetworkError, SocketTimeoutError


class ReplicaBehind(TimeoutError):
    """A replica did not catch up with its shard's log in time: the infrastructure's failure, not the
    batch's (a ``TimeoutError`` is an ``OSError``: retried by ``sinks.poison.retryable``)."""


Address = tuple[str, int]

# Per process: the cluster's replicas; per thread (a worker may check while it writes), one connection
# to each.
_replicas: dict[str, list[Address]] = {}
_connections: dict[tuple[int, str, str, int, float], Client] = {}


def replicas(client: Any, cluster: str) -> list[Address]:
    """The (host, native port) of every replica of ``cluster``, as the initiator ``client`` is
    connected to knows them."""
    if cluster not in _replicas:
        _replicas[cluster] = [(host, int(port)) for host, port in client.execute(
            "SELECT host_name, port FROM system.clusters WHERE cluster = %(cluster)s ORDER BY shard_num, replica_num",
            {"cluster": cluster})]
    return _replicas[cluster]


def _connection(client: Any, address: Address, wait_s: float) -> Client:
    conn = client.connection
    key = (threading.get_ident(), conn.user, *address, wait_s)
    if key not in _connections:
        _connections[key] = Client(host=address[0], port=address[1], user=conn.user, password=conn.password,
                                   database="default", connect_timeout=conn.connect_timeout,
                                   send_receive_timeout=wait_s)
    return _connections[key]


def synchronize(client: Any, cluster: str, db: str, tables: Iterable[str], wait_s: float) -> None:
    """Return once every reachable replica of ``cluster`` holds every part of ``db``'s replicated
    ``tables`` (shard-local names) whose INSERT returned before this call began; raise
    :class:`ReplicaBehind` if one did not within ``wait_s`` seconds."""
    names = list(tables)
    for address in replicas(client, cluster):
        side = _connection(client, address, wait_s)
        if not side.connection.connected:
            try:
                side.connection.connect()
            except (NetworkError, SocketTimeoutError, OSError):
                side.disconnect()
                continue  # down: no read reaches it
        for table in names:
            try:
                side.execute(f"SYSTEM SYNC REPLICA {db}.{table}")
            except (SocketTimeoutError, TimeoutError) as exc:
                side.disconnect()
                raise ReplicaBehind(f"replica {address[0]}:{address[1]} did not catch up with {db}.{table} "
                                    f"within {wait_s:g} s") from exc
            except NetworkError:
                side.disconnect()
                break  # it went down since it was last asked (the driver found it gone): as above
            except ClickHouseError:
                side.disconnect()
                raise
