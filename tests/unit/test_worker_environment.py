"""A `highland worker` child reads the settings its parent passes (highland.settings.worker_environment)."""

from __future__ import annotations

import pytest
from highland.sinks.topology import Topology

from highland.settings import Settings, worker_environment


def child_settings(parent: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in worker_environment(parent).items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_a_child_of_a_single_server_worker_writes_to_one_server(monkeypatch: pytest.MonkeyPatch) -> None:
    child = child_settings(Settings(_env_file=None, clickhouse_cluster=None), monkeypatch)  # type: ignore[call-arg]
    assert child.clickhouse_cluster is None
    assert Topology.of(child).mutable("db", "events") == "db.events"  # no "ON CLUSTER" without a name


def test_a_child_of_a_cluster_worker_writes_to_the_same_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    child = child_settings(Settings(_env_file=None, clickhouse_cluster="highland"), monkeypatch)  # type: ignore[call-arg]
    assert child.clickhouse_cluster == "highland"
    assert Topology.of(child).membership == "GLOBAL IN"
