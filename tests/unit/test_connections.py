"""The connections a mirror takes: within its descriptor budget, from allowed
networks only, idle ones reclaimed for newcomers; refusals counted and
logged at most once a minute.

Connections are the mirror's real Site protocols over StringTransports,
accepted the way Twisted's port accepts them (`buildProtocol`, which may
refuse by answering None).
"""

from __future__ import annotations

import ipaddress

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from mirrorproxy.server.channel import MirrorSite
from mirrorproxy.server.connections import (
    REFUSAL_LOG_INTERVAL,
    ConnectionGate,
    default_max_connections,
)

from .harness import Client, Harness


def peer(host: str = "10.1.2.3"):
    return (IPv6Address if ":" in host else IPv4Address)("TCP", host, 40000)


@pytest.fixture
def refusals():
    events: list[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "mirrorproxy.server.connections":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


class Gated:
    def __init__(self, harness: Harness, limit: int, networks: tuple[str, ...] = ()) -> None:
        self.harness = harness
        self.gate = ConnectionGate(
            harness.clock, limit, tuple(ipaddress.ip_network(n) for n in networks)
        )
        self.site = MirrorSite(harness.site.resource, reactor=harness.clock, gate=self.gate)

    def connect(self, host: str = "10.1.2.3") -> Client | None:
        address = peer(host)
        protocol = self.site.buildProtocol(address)
        if protocol is None:
            return None
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return Client(transport, protocol)

    def request(self, client: Client, path: str = "/v2/") -> None:
        client.protocol.dataReceived(f"GET {path} HTTP/1.1\r\nHost: m\r\n\r\n".encode())


def begin(client: Client, path: str = "/v2/library/a/manifests/latest") -> None:
    """A request that stays under way (its upstream never answers here)."""
    client.protocol.dataReceived(f"GET {path} HTTP/1.1\r\nHost: m\r\n\r\n".encode())


def test_the_default_leaves_room_for_two_descriptors_a_connection():
    assert default_max_connections(256) == 96
    assert default_max_connections(1024) == 480
    assert default_max_connections(64) == 16


def test_at_the_limit_the_longest_idle_connection_makes_room(harness):
    gated = Gated(harness, limit=3)
    first, second, _ = gated.connect(), gated.connect(), gated.connect()
    gated.request(second)  # answered: idle again, but more recently than first

    newcomer = gated.connect()

    assert newcomer is not None
    assert first.transport.disconnecting and not second.transport.disconnecting
    assert gated.gate.reclaimed == 1


def test_when_every_connection_is_busy_a_newcomer_is_closed_at_once(harness, refusals):
    data = b"x" * 300_000
    digest = harness.registry.add_blob(data)
    harness.registry.hold.add(digest)
    gated = Gated(harness, limit=2)
    busy = [gated.connect(), gated.connect()]
    for client in busy:
        begin(client, f"/v2/library/a/blobs/{digest}")
    harness.pump()

    assert gated.connect() is None
    assert gated.connect() is None

    assert gated.gate.refused["limit"] == 2
    assert len(refusals) == 1, "logged once, not per connection"
    assert "2 open of 2" in refusals[0]["log_format"].format(**refusals[0])

    # The mirror recovers by itself once a connection ends.
    busy[0].disconnect()
    assert gated.connect() is not None


def test_refusals_are_logged_again_after_a_minute(harness, refusals):
    gated = Gated(harness, limit=1, networks=("10.0.0.0/8",))
    for _ in range(5):
        assert gated.connect("192.0.2.9") is None
    harness.clock.advance(REFUSAL_LOG_INTERVAL)
    assert gated.connect("192.0.2.9") is None

    assert gated.gate.refused["network"] == 6
    assert len(refusals) == 2
    # The second message counts what the first did not: all but the first.
    assert (refusals[0]["network_count"], refusals[1]["network_count"]) == (1, 5)


@pytest.mark.parametrize("host", ["192.0.2.7", "2001:db8::1", "::ffff:192.0.2.7"])
def test_clients_outside_the_allowed_networks_are_closed_at_accept(harness, host):
    gated = Gated(harness, limit=100, networks=("10.0.0.0/8", "fd00::/8"))

    assert gated.connect(host) is None
    assert gated.connect("10.9.9.9") is not None
    assert gated.connect("::ffff:10.9.9.9") is not None
    assert gated.gate.open == 2


def test_a_thousand_idle_connections_do_not_keep_a_new_client_out(harness):
    gated = Gated(harness, limit=50)
    clients: list[Client] = []
    for _ in range(1000):
        client = gated.connect()
        assert client is not None
        clients.append(client)
        for reclaimed in [c for c in clients if c.transport.disconnecting]:
            reclaimed.disconnect()  # what the reactor does with a closed socket
            clients.remove(reclaimed)
        assert gated.gate.open <= 50

    client = gated.connect()
    gated.request(client)

    assert client.response().status == 200
    assert gated.gate.reclaimed == 951
