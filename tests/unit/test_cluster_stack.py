"""The cluster stack's layout without starting anything: its ports come from the settings (so every
stack keeps its own block), each server's cluster config, what `stack up --cluster` remembers in
local.env, and what `stack status` lists."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from highland.settings import Settings
from highland.stack import cluster, local


def _settings(state: Path, **extra: object) -> Settings:
    return Settings(state_dir=state, install_missing=False, clickhouse_port=33000, clickhouse_http_port=33123,
                    kafka_bootstrap="127.0.0.1:33092", **extra)  # type: ignore[arg-type]


def test_four_servers_two_shards_two_replicas_on_ports_of_the_settings(tmp_path: Path):
    servers = cluster.servers(_settings(tmp_path))
    assert [(s.shard, s.replica) for s in servers] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert [s.tcp_port for s in servers] == [33000, 33010, 33020, 33030]  # the first: the clients' port
    assert [s.http_port for s in servers] == [33123, 33133, 33143, 33153]
    assert [s.interserver_port for s in servers] == [33124, 33134, 33144, 33154]
    assert cluster.zookeeper_port(_settings(tmp_path)) == 33181
    every = [p for s in servers for p in (s.tcp_port, s.http_port, s.interserver_port)]
    assert len(set(every)) == len(every) and all(33000 <= p < 34000 for p in every)
    assert len({s.state_dir for s in servers}) == 4 and all(tmp_path in s.state_dir.parents for s in servers)


def test_each_server_knows_its_shard_replica_zookeeper_and_the_whole_cluster(tmp_path: Path):
    settings = _settings(tmp_path)
    srv = cluster.server(settings, shard=2, replica=1)
    root = ET.fromstring(cluster._cluster_config(settings, srv, "secret"))
    assert root.findtext("macros/shard") == "2"
    assert root.findtext("macros/replica") == "clickhouse-2-1"  # unique: tables on every server need it
    assert root.findtext("interserver_http_port") == "33144"
    assert root.findtext("zookeeper/node/port") == "33181"
    shards = root.findall(f"remote_servers/{cluster.NAME}/shard")
    assert [s.findtext("internal_replication") for s in shards] == ["true", "true"]
    assert [[r.findtext("port") for r in s.findall("replica")] for s in shards] == [["33000", "33010"],
                                                                                  ["33020", "33030"]]


def test_up_cluster_remembers_the_topology_in_local_env_and_single_forgets_it(tmp_path: Path, monkeypatch):
    for name in ("HIGHLAND_CLICKHOUSE_CLUSTER", "HIGHLAND_BROKER", "HIGHLAND_KAFKA_BOOTSTRAP",
                 "HIGHLAND_TOPIC_REPLICATION"):
        monkeypatch.delenv(name, raising=False)
    settings = _settings(tmp_path)
    local.remember_topology(settings, as_cluster=True)
    remembered = Settings(_env_file=local.env_file(settings))
    assert remembered.clickhouse_cluster == cluster.NAME and remembered.broker == "kafka"
    assert remembered.kafka_bootstrap == "127.0.0.1:33092,127.0.0.1:33094,127.0.0.1:33096"
    assert remembered.topic_replication == 3
    secrets = {k: local.ensure_secrets(settings)[k] for k in local.SECRET_KEYS}
    local.remember_topology(settings, as_cluster=False)
    forgotten = Settings(_env_file=local.env_file(settings))
    assert forgotten.clickhouse_cluster is None and forgotten.topic_replication == 1
    assert {k: local.ensure_secrets(settings)[k] for k in local.SECRET_KEYS} == secrets


def test_status_of_a_cluster_lists_every_component_with_its_role(tmp_path: Path):
    rows = local.status(_settings(tmp_path, clickhouse_cluster=cluster.NAME))
    assert [r["name"] for r in rows] == ["kafka-1", "kafka-2", "kafka-3", "zookeeper", "clickhouse-1-1",
                                         "clickhouse-1-2", "clickhouse-2-1", "clickhouse-2-2"]
    assert all({"name", "address", "pid", "role"} <= set(r) for r in rows)
    servers = [r for r in rows if r["component"] == "clickhouse"]
    assert [(r["role"]["shard"], r["role"]["replica"]) for r in servers] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(r["pid"] is None for r in rows)  # nothing was started here
