"""Writing accepted events to ClickHouse: columnar batches, each (agency, event_id, revision) once.

A batch crosses from Python to ClickHouse once, into ``_batch``, a temporary table of the writer's
session; every later step is SQL over it, and Python sees only a few numbers back. Per batch:
1. ``_stored``: every stored revision of the batch's keys (agency, event_id);
2. ``_fresh``: the newest revision per key in the batch (equal revisions: the first read), kept
   only if it is above every stored revision, and INSERTed into ``events``. The rest is a
   re-delivery after a crash, a replay, a duplicate, or an older revision arriving late: skipped, so
   the live windows (fed by that INSERT) count an arrival once;
3. ``_stored_now``: every stored revision of the batch's keys again, read after that INSERT;
4. ``_obs``: the observation rows ``_stored_now`` implies (sinks/daily_series.py): +1 for every
   stored revision, -1 for every one below its key's newest -- then the per-day series' ``begin``
   (stores the rows not stored yet) and ``settle``.

The observations are derived from what ``events`` holds *after* the batch's INSERT, never from the
snapshot of step 1, and that is what keeps the numbers exact without any premise on partitioning.
Two writers (workers, writer processes) may store revisions of one key at the same time: a revision
may move an observation to another indicator or region (another message key), and clients partition
keys differently. Each reads step 3 after its own INSERT returned, so the one whose step 3 starts
last sees both revisions (if the other's INSERT had not returned when that read began, it returned
after this writer's INSERT, hence before the other's read) and writes the -1 row; rows already
stored are not written again. A writer that dies after its INSERT has its batch re-delivered: its
revisions are then found stored (not fresh), and step 4 derives and stores their rows all the same.
And no observation row exists for a revision ``events`` does not hold.

Temporary tables live as long as the connection: a failed attempt leaves nothing behind, and the
retry (on a new connection) starts again from ``_batch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from highland.ingest.events import Accepted
from highland.sinks import daily_series
from highland.sinks.daily_series import replace_session_table, stage_columns
from highland.sinks.tables import DAILY_SERIES, EVENTS, OBSERVATIONS_BY_SERIES
from highland.sinks.topology import SINGLE_NODE, Topology

EVENT_COLUMNS = EVENTS.names
# The first eight columns are copied from the event's own first eight fields, in one transposition.
_COPIED = 8
if Accepted._fields[:_COPIED] != EVENT_COLUMNS[:_COPIED]:
    raise ImportError("sinks.writer: EVENT_COLUMNS no longer start with the fields of ingest.events.Accepted")
# What the worker sends: every column but received_at, which the writer sets once per batch.
BATCH_STRUCTURE = EVENTS.structure(EVENTS.without("received_at"))
_KEPT = ", ".join(name for name, _ in BATCH_STRUCTURE)  # the batch's columns, as SQL
_OBSERVED_AT = Accepted._fields.index("observed_at")


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    skipped: int  # already stored, or superseded by a higher revision

    @classmethod
    def of_parts(cls, results: Sequence[WriteResult]) -> WriteResult:
        return cls(sum(r.inserted for r in results), sum(r.skipped for r in results))


class BatchColumns(NamedTuple):
    """A batch as the columns of ``_batch`` (BATCH_STRUCTURE order): what the worker hands the
    writer process (lists of columns pickle far faster than tuples of datetimes: docs/benchmarks.md)."""

    columns: list[list[Any]]

    @classmethod
    def of_events(cls, events: Sequence[Accepted], partitions: list[int], offsets: list[int]) -> BatchColumns:
        """The columns of ``events``, read at ``partitions`` and ``offsets`` (one each)."""
        if not events:
            return cls([[] for _ in BATCH_STRUCTURE])
        fields = list(zip(*events, strict=True))
        epochs = [int(moment.timestamp()) for moment in fields[_OBSERVED_AT]]  # epoch seconds: the driver's fast path
        return cls([*map(list, fields[:_COPIED]), epochs, partitions, offsets])

    def __len__(self) -> int:
        return len(self.columns[0])


class BatchShares:
    """Accepted events gathered straight into one share per writer process (``partition % parts``),
    as the worker validates them: no object per event besides the event itself."""

    def __init__(self, parts: int) -> None:
        self._events: list[list[Accepted]] = [[] for _ in range(parts)]
        self._partitions: list[list[int]] = [[] for _ in range(parts)]
        self._offsets: list[list[int]] = [[] for _ in range(parts)]

    def add(self, event: Accepted, partition: int, offset: int) -> None:
        share = partition % len(self._events)
        self._events[share].append(event)
        self._partitions[share].append(partition)
        self._offsets[share].append(offset)

    def columns(self) -> list[BatchColumns]:
        return [BatchColumns.of_events(*share) for share in zip(self._events, self._partitions, self._offsets,
                                                                strict=True)]


def stored_revisions_sql(db: str, topology: Topology, keys: str = "_batch") -> str:
    """Every stored revision of the keys in the session table ``keys`` (agency, event_id columns;
    copies of a row once).

    Found by one column at a time, as a superset: 18.16 builds tuple sets slowly
    (docs/clickhouse-dialect.md, "tuple-sets"). Rows of other keys that match both columns (another
    agency's same event_id) change nothing: every later step joins or filters on the exact key, and
    at worst an extra day is settled."""
    in_ = topology.membership
    return f"""
        SELECT DISTINCT agency, event_id, revision, indicator, region, observed_at, value FROM {db}.events
        WHERE agency {in_} (SELECT agency FROM {keys}) AND event_id {in_} (SELECT event_id FROM {keys})"""


# The newest revision per key in the batch (ties: the first read), above every stored revision.
# (A sort, not an argMax per key: its output is in the events table's order, which the INSERTs of
# events and observations then find already sorted: docs/clickhouse-dialect.md, "insert-order".)
FRESH = f"""
    SELECT {_KEPT} FROM (
        SELECT * FROM _batch
        ORDER BY agency, event_id, revision DESC, kafka_partition, kafka_offset
        LIMIT 1 BY agency, event_id) AS newest
    ANY LEFT JOIN (SELECT agency, event_id, max(revision) AS top_stored, 1 AS is_stored FROM _stored
                   GROUP BY agency, event_id) AS stored USING (agency, event_id)
    WHERE is_stored = 0 OR revision > top_stored"""


class WriteSession:
    """One batch written on one connection, in named steps (the module docstring's 1-4). Each step
    owns the session tables it creates and reads only those of the steps before it, which is why
    they all run on this object's one ``client``: ClickHouse's temporary tables live in the session
    that made them. A failed step leaves nothing the next attempt could trip on: that attempt is a
    new session (a new connection), starting again from ``stage``."""

    def __init__(self, client: Any, db: str, tz: str, topology: Topology = SINGLE_NODE) -> None:
        self.client, self.db, self.tz, self.topology = client, db, tz, topology

    def stage(self, batch: BatchColumns) -> None:
        """``_batch``: the batch's events, the one time they are sent (in a session opened for the
        topology: sinks/topology.py)."""
        self.topology.open_session(self.client)
        stage_columns(self.client, "_batch", BATCH_STRUCTURE, batch.columns)

    def deduplicate(self) -> None:
        """Steps 1-2: ``_stored`` (what is stored of the batch's keys), ``_fresh`` (what is new). On a
        cluster the read waits as ``observe``'s does: a replica behind would make a revision already
        stored (a re-delivered batch's) look fresh, and its second copy in ``events`` would be counted
        again by the live windows, which that INSERT feeds."""
        self.topology.await_replicas(self.client, self.db, (EVENTS,))
        replace_session_table(self.client, "_stored", stored_revisions_sql(self.db, self.topology))
        replace_session_table(self.client, "_fresh", FRESH)

    def insert_events(self, received_at: datetime) -> None:
        """Step 2's INSERT of ``_fresh`` into ``events`` (and, through it, the live windows)."""
        self.client.execute(f"""INSERT INTO {self.db}.events ({', '.join(EVENT_COLUMNS)})
            SELECT agency, event_id, revision, indicator, region, value, unit, raw_value, observed_at,
                   toDateTime(%(received_at)s), kafka_partition, kafka_offset
            FROM _fresh""", {"received_at": int(received_at.timestamp())})

    def observe(self) -> None:
        """Steps 3-4: ``_stored_now``, read after the INSERT, and ``_obs``, the rows it implies. On a
        cluster the read waits until every replica it may reach holds every INSERT into ``events``
        that returned before -- this one's and other writers' (sinks/replicas.py)."""
        self.topology.await_replicas(self.client, self.db, (EVENTS,))
        replace_session_table(self.client, "_stored_now", stored_revisions_sql(self.db, self.topology))
        replace_session_table(self.client, "_obs", daily_series.implied_rows_sql(self.tz, "_stored_now"))

    def settle(self) -> None:
        """Step 4's per-day series: ``begin`` then ``settle`` on ``_obs`` (sinks/daily_series.py);
        on a cluster ``settle`` counts and reads states once every replica holds ``begin``'s rows and
        every other writer's rows and states that were stored before."""
        daily_series.begin(self.client, self.db, topology=self.topology)
        self.topology.await_replicas(self.client, self.db, (OBSERVATIONS_BY_SERIES, DAILY_SERIES))
        daily_series.settle(self.client, self.db, topology=self.topology)

    def result(self, batch_size: int) -> WriteResult:
        [(fresh,)] = self.client.execute("SELECT count() FROM _fresh")
        return WriteResult(inserted=fresh, skipped=batch_size - fresh)

    def write(self, batch: BatchColumns, received_at: datetime) -> WriteResult:
        """Every step, in order."""
        if not len(batch):
            return WriteResult(inserted=0, skipped=0)
        self.stage(batch)
        self.deduplicate()
        self.insert_events(received_at)
        self.observe()
        self.settle()
        return self.result(len(batch))


def write_events(client: Any, db: str, batch: BatchColumns, received_at: datetime, tz: str,
                 topology: Topology = SINGLE_NODE) -> WriteResult:
    """Insert what is new in ``batch``; idempotent, so a failed call can simply be repeated.

    ``tz`` is the plan's timezone (its days), from the same catalog the events were validated with.
    """
    return WriteSession(client, db, tz, topology).write(batch, received_at)
