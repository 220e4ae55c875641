"""ClickHouse connections built from settings (one place that knows hosts, users and passwords)."""

from __future__ import annotations

from clickhouse_driver import Client

from highland.settings import Settings


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
        settings={"use_numpy": False},
    )
