"""How responses leave the mirror: sendfile(2) on plain TCP for cache hits
and followers of a running fill alike, chunks read without the thread pool
when the page cache has them, never a byte past what the fill verified."""

from __future__ import annotations

import os
import socket

import pytest
from attrs import define, field
from twisted.internet import tcp
from twisted.internet.testing import MemoryReactorClock

from mirrorproxy.cache import follow

from .harness import (
    Harness,
    ManualRunner,
    blob_path,
    held_blob,
    parse_response,
    upstream_blob,
)

MiB = 1024 * 1024


@define
class _Port:
    _realPortNumber: int = 0


@define(eq=False)
class TcpClient:
    """A client on a real loopback TCP connection to the mirror's channel,
    whose transport is Twisted's own `tcp.Server` (so sendfile applies);
    its reactor is a memory reactor the test drives."""

    harness: Harness
    sock: socket.socket
    transport: tcp.Server
    reactor: MemoryReactorClock
    received: bytearray = field(factory=bytearray)
    reset: bool = False  # the mirror aborted the connection

    @classmethod
    def connect(cls, harness: Harness) -> TcpClient:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, address = listener.accept()
        listener.close()
        client.setblocking(False)
        reactor = MemoryReactorClock()
        protocol = harness.site.buildProtocol(address)
        transport = tcp.Server(server, protocol, address, _Port(), 1, reactor)
        protocol.makeConnection(transport)
        return cls(harness, client, transport, reactor)

    def get(self, path: str) -> None:
        request = f"GET {path} HTTP/1.1\r\nHost: mirror.test\r\n\r\n".encode()
        self.transport.protocol.dataReceived(request)

    def drive(self, rounds: int = 10_000) -> None:
        """Upstream, the mirror's writes and this client's reads, until
        nothing moves."""
        for _ in range(rounds):
            moved = False
            self.harness.pump()
            self.reactor.advance(0)  # an abort's connectionLost
            if self.transport in self.reactor.getWriters():
                self.transport.doWrite()
                moved = True
            try:
                data = self.sock.recv(4 * MiB)
            except BlockingIOError:
                data = b""
            except ConnectionResetError:
                self.reset = True
                data = b""
            if data:
                self.received += data
                moved = True
            if not moved:
                return

    def response(self):
        return parse_response(bytes(self.received), self.transport.disconnected)

    def close(self) -> None:
        self.sock.close()
        if not self.transport.disconnected:
            self.transport.socket.close()


@pytest.fixture
def sendfile_calls(monkeypatch):
    """Bytes each os.sendfile call sent (the real call still happens)."""
    calls: list[int] = []
    real = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        n = real(out_fd, in_fd, offset, count)
        calls.append(n)
        return n

    monkeypatch.setattr(os, "sendfile", counting)
    return calls


def test_a_follower_of_a_running_fill_sends_by_sendfile(harness, sendfile_calls):
    data, digest = held_blob(harness, 4 * MiB)
    client = TcpClient.connect(harness)
    client.get(blob_path(digest))
    client.drive()
    held = harness.registry.held[digest]

    held.send(3 * MiB)
    client.drive()

    # Everything written so far reached the client, most of it by sendfile,
    # while the fill still runs.
    assert client.response().body == data[: 3 * MiB]
    assert sum(sendfile_calls) >= 2 * MiB
    held.finish()
    client.drive()
    response = client.response()
    assert (response.status, response.complete, response.body == data) == (200, True, True)
    client.close()


def test_sendfile_stops_short_of_the_unverified_last_byte(harness, sendfile_calls):
    data, digest = held_blob(harness, 3 * MiB)
    bad = harness.registry.wrong_bytes[digest] = data[:-1] + bytes([data[-1] ^ 1])
    client = TcpClient.connect(harness)
    client.get(blob_path(digest))
    client.drive()
    held = harness.registry.held[digest]

    held.send(3 * MiB - 1)
    client.drive()
    assert client.response().body == bad[:-1]
    assert sendfile_calls

    held.finish()  # the last byte: the digest is wrong
    client.drive()
    response = client.response()
    assert response.body == bad[:-1] and not response.complete
    assert client.reset and client.transport.disconnected
    client.close()


def test_a_caught_up_follower_waits_for_a_batch_before_sending_again(harness, sendfile_calls):
    data, digest = held_blob(harness, 8 * MiB)
    client = TcpClient.connect(harness)
    client.get(blob_path(digest))
    client.drive()
    held = harness.registry.held[digest]
    held.send(2 * MiB)
    client.drive()
    calls = len(sendfile_calls)

    for _ in range(4):
        held.send(64 * 1024)
        client.drive()
    assert len(sendfile_calls) == calls  # no pool call per small write

    held.send(follow.FOLLOW_BATCH)
    client.drive()
    assert len(sendfile_calls) > calls
    assert client.response().body == data[: 2 * MiB + 4 * 64 * 1024 + follow.FOLLOW_BATCH]
    held.finish()
    client.drive()
    assert client.response().body == data and client.response().complete
    client.close()


def test_a_trickling_fill_still_reaches_a_caught_up_follower(harness, sendfile_calls):
    data, digest = held_blob(harness, 8 * MiB)
    client = TcpClient.connect(harness)
    client.get(blob_path(digest))
    client.drive()
    held = harness.registry.held[digest]
    held.send(2 * MiB)
    client.drive()
    calls = len(sendfile_calls)

    for _ in range(follow.FOLLOW_WAITS + 1):
        held.send(1024)  # far less than FOLLOW_BATCH, however long it takes
        client.drive()

    assert len(sendfile_calls) > calls
    assert client.response().body == data[: 2 * MiB + (follow.FOLLOW_WAITS + 1) * 1024]
    held.finish()
    client.drive()
    assert client.response().body == data and client.response().complete
    client.close()


def test_on_plain_tcp_only_a_small_first_chunk_passes_through_python(harness, sendfile_calls):
    data, digest = upstream_blob(harness, 4 * MiB)
    assert harness.get(blob_path(digest)).complete  # now cached
    client = TcpClient.connect(harness)

    client.get(blob_path(digest))
    client.drive()

    response = client.response()
    assert response.body == data and response.headers["x-cache"] == "HIT"
    assert len(data) - sum(sendfile_calls) == follow.FIRST_CHUNK < follow.CHUNK_SIZE
    client.close()


@define(eq=False)
class ManualFill:
    """One client's GET of a held blob on a mirror whose thread pool runs
    only when the test says: the fill is under way, upstream sends on cue."""

    harness: Harness
    runner: ManualRunner
    data: bytes
    digest: str
    client: object
    held: object

    @classmethod
    def start(cls, tmp_path, size: int) -> ManualFill:
        runner = ManualRunner()
        harness = Harness(str(tmp_path / "cache"), run=runner)
        runner.run_all()
        data, digest = held_blob(harness, size)
        client = harness.send("GET", blob_path(digest))
        started = cls(harness, runner, data, digest, client, None)
        started.settle()
        started.held = harness.registry.held[digest]
        return started

    def settle(self) -> None:
        """Run the pool and move bytes until nothing is left to do."""
        self.harness.pump()
        while self.runner.run_all():
            self.harness.pump()

    def finish(self) -> None:
        self.held.finish()
        self.settle()


def test_a_joiner_gets_its_first_chunk_without_the_thread_pool(tmp_path):
    fill = ManualFill.start(tmp_path, 2 * MiB)
    data = fill.data
    fill.held.send(MiB)
    fill.settle()
    assert fill.client.response().body[:1] == data[:1]

    late = fill.harness.send("GET", blob_path(fill.digest))
    fill.harness.pump()

    # The spool file's bytes are in the page cache: read on the spot, not
    # queued behind whatever the pool is doing.
    assert late.response().body == data[:MiB]
    fill.finish()
    assert late.response().body == data and late.response().complete


def test_a_blob_body_is_read_from_its_socket_a_mib_at_a_time(harness):
    """Twisted reads 64 KiB per pass by default; a fill asks for more, so a
    fast upstream costs one pass of the reactor per MiB."""
    from twisted.internet.protocol import Protocol
    from twisted.web._newclient import TransportProxyProducer

    from mirrorproxy.cache.fill.body import UPSTREAM_READ
    from mirrorproxy.registry.names import Digest

    _, digest = held_blob(harness, MiB)
    harness.send("GET", blob_path(digest))
    harness.pump()
    fill = harness.mirror.blobs._fills[Digest.parse(digest)]
    ours, theirs = socket.socketpair()
    connection = tcp.Connection(ours, Protocol(), MemoryReactorClock())

    fill._receiver().makeConnection(TransportProxyProducer(connection))

    assert connection.bufferSize == UPSTREAM_READ >= MiB
    ours.close()
    theirs.close()


def test_a_fill_batch_is_one_pool_job(tmp_path):
    """Hash and write of a batch share one thread hop, not one each."""
    fill = ManualFill.start(tmp_path, 2 * MiB)

    fill.held.send(MiB)
    fill.harness.pump()

    assert len(fill.runner.jobs) == 1
    fill.finish()
    assert fill.client.response().body == fill.data and fill.client.response().complete


def test_the_batch_being_written_counts_against_a_fills_memory(tmp_path):
    """Upstream pauses when what waits plus what is being written reaches
    QUEUE_HIGH: a fill holds at most that and one socket read."""
    from mirrorproxy.cache.fill.writes import QUEUE_HIGH
    from mirrorproxy.registry.names import Digest

    started = ManualFill.start(tmp_path, 4 * QUEUE_HIGH)
    held, data = started.held, started.data
    fill = started.harness.mirror.blobs._fills[Digest.parse(started.digest)]

    held.send(QUEUE_HIGH * 3 // 4)  # one batch, in the pool and not done
    started.harness.pump()
    assert len(started.runner.jobs) == 1 and fill.upstream_pauses == 0
    held.send(QUEUE_HIGH // 2)  # waits behind it: 1.25 x QUEUE_HIGH held
    started.harness.pump()

    assert fill.upstream_pauses == 1
    while held.sent < len(data):
        held.send(QUEUE_HIGH)
        started.settle()
    assert started.client.response().body == data and started.client.response().complete


def test_a_sendfile_follower_tells_the_fill_how_far_it_is(harness, sendfile_calls):
    # The fill paces itself by its fastest client's position.
    data, digest = held_blob(harness, 4 * MiB)
    client = TcpClient.connect(harness)
    client.get(blob_path(digest))
    client.drive()
    harness.registry.held[digest].send(3 * MiB)
    client.drive()

    from mirrorproxy.registry.names import Digest

    fill = harness.mirror.blobs._fills[Digest.parse(digest)]
    assert sum(sendfile_calls) >= 2 * MiB
    assert fill._followers.offsets() == [len(client.response().body)]
    client.close()
