"""Which address a gateway request is counted against (docs/agencies.md, "Gateway limits"):
X-Forwarded-For only from a trusted proxy, and then the nearest hop that is not a trusted proxy."""

from __future__ import annotations

import pytest
from highland.ingest.gateway import client_address, trusted_networks

PROXIES = trusted_networks("10.0.0.0/8, 127.0.0.1")


@pytest.mark.parametrize(("peer", "forwarded", "expected"), [
    ("127.0.0.1", None, "127.0.0.1"),  # the proxy itself, nothing forwarded
    ("127.0.0.1", "203.0.113.7", "203.0.113.7"),
    ("127.0.0.1", "198.51.100.1, 203.0.113.7", "203.0.113.7"),  # the client wrote the first hop itself
    ("127.0.0.1", "203.0.113.7, 10.1.2.3", "203.0.113.7"),  # through two proxies of ours
    ("127.0.0.1", "10.1.2.3, 10.4.5.6", "10.1.2.3"),  # only proxies: the farthest
    ("127.0.0.1", "not-an-address", "not-an-address"),  # counted under what the proxy wrote
    ("192.0.2.5", "203.0.113.7", "192.0.2.5"),  # not a trusted proxy: the header is ignored
    ("192.0.2.5", None, "192.0.2.5"),
    (None, "203.0.113.7", "?"),
])
def test_the_client_address(peer: str | None, forwarded: str | None, expected: str):
    assert client_address(peer, forwarded, PROXIES) == expected


def test_no_trusted_proxy_means_the_header_is_never_believed():
    assert client_address("127.0.0.1", "203.0.113.7", trusted_networks("")) == "127.0.0.1"
