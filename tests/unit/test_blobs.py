"""Blob GET/HEAD: cache hits, misses, coalescing, backpressure, integrity."""

from __future__ import annotations

import os

import pytest

from mirrorproxy.registry.names import Digest

from ..fakeregistry import sha256
from .harness import blob_path, disk_fills_after, held_blob, upstream_blob


def test_miss_then_hit_costs_one_upstream_get(harness):
    data, digest = upstream_blob(harness, 1_000_000)

    first = harness.get(blob_path(digest))
    second = harness.get(blob_path(digest))

    assert (first.status, first.body, first.complete) == (200, data, True)
    assert first.headers["docker-content-digest"] == digest
    assert first.headers["content-length"] == str(len(data))
    assert (second.status, second.body) == (200, data)
    assert first.headers["x-cache"] == "MISS" and second.headers["x-cache"] == "HIT"
    assert harness.registry.count("GET", "/blobs/") == 1


def test_unknown_blob_is_blob_unknown(harness):
    response = harness.get(blob_path(sha256(b"nothing")))
    assert response.status == 404
    assert response.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


def test_twenty_concurrent_cold_clients_cost_one_upstream_get(harness):
    data, digest = upstream_blob(harness, 3 * 1024 * 1024 + 17)

    clients = [harness.send("GET", blob_path(digest)) for _ in range(20)]
    harness.pump()

    assert harness.registry.count("GET", "/blobs/") == 1
    for client in clients:
        response = client.response()
        assert (response.status, response.complete, response.aborted) == (200, True, False)
        assert response.body == data
    outcomes = sorted(c.response().headers["x-cache"] for c in clients)
    assert outcomes == ["JOIN"] * 19 + ["MISS"]


def test_clients_from_other_repositories_join_the_same_fetch(harness):
    data, digest = upstream_blob(harness, 200_000)

    a = harness.send("GET", f"/v2/library/alpine/blobs/{digest}")
    b = harness.send("GET", f"/v2/someone/else/blobs/{digest}")
    harness.pump()

    assert a.response().body == data and b.response().body == data
    assert harness.registry.count("GET", "/blobs/") == 1


def test_first_bytes_reach_the_client_before_upstream_finishes(harness):
    data, digest = held_blob(harness, 500_000)

    client = harness.send("GET", blob_path(digest))
    harness.pump()
    harness.registry.held[digest].send(100_000)
    harness.pump()

    response = client.response()
    assert response.status == 200 and response.headers["content-length"] == str(len(data))
    assert response.body == data[:100_000]
    assert not response.complete


def test_late_joiner_starts_at_once_with_what_is_on_disk(harness):
    data, digest = held_blob(harness, 500_000)
    early = harness.send("GET", blob_path(digest))
    harness.pump()
    held = harness.registry.held[digest]
    held.send(300_000)
    harness.pump()

    late = harness.send("GET", blob_path(digest))
    harness.pump()

    assert late.response().body == data[:300_000]
    held.finish()
    harness.pump()
    assert late.response().body == data and late.response().complete
    assert early.response().body == data and early.response().complete
    assert harness.registry.count("GET", "/blobs/") == 1


def test_a_paused_client_slows_no_one(harness):
    data, digest = held_blob(harness, 2 * 1024 * 1024)
    slow = harness.send("GET", blob_path(digest))
    fast = harness.send("GET", blob_path(digest))
    harness.pump()
    slow.pause()

    harness.registry.held[digest].finish()
    harness.pump()

    assert fast.response().body == data and fast.response().complete
    stalled = slow.response()
    assert stalled is None or len(stalled.body) < len(data)
    # The fill is committed although the slow client is still reading.
    assert harness.get(blob_path(digest)).headers["x-cache"] == "HIT"
    slow.resume()
    harness.pump()
    assert slow.response().body == data and slow.response().complete


def test_a_paused_client_holds_one_chunk_not_the_blob(harness):
    _, digest = held_blob(harness, 4 * 1024 * 1024)
    client = harness.send("GET", blob_path(digest))
    harness.pump()
    client.pause()
    harness.registry.held[digest].finish()
    harness.pump()

    from mirrorproxy.cache.follow import CHUNK_SIZE

    assert len(client.transport.value()) <= CHUNK_SIZE + 1024


def test_a_client_that_disconnects_breaks_no_one_and_the_fill_completes(harness):
    data, digest = held_blob(harness, 1024 * 1024)
    leaving = harness.send("GET", blob_path(digest))
    staying = harness.send("GET", blob_path(digest))
    harness.pump()
    held = harness.registry.held[digest]
    held.send(200_000)
    harness.pump()

    leaving.disconnect()
    held.finish()
    harness.pump()

    assert staying.response().body == data and staying.response().complete
    assert harness.get(blob_path(digest)).headers["x-cache"] == "HIT"


def test_the_fill_completes_after_every_client_has_gone(harness):
    data, digest = held_blob(harness, 600_000)
    client = harness.send("GET", blob_path(digest))
    harness.pump()
    client.disconnect()

    harness.registry.held[digest].finish()
    harness.pump()

    again = harness.get(blob_path(digest))
    assert again.body == data and again.headers["x-cache"] == "HIT"
    assert harness.registry.count("GET", "/blobs/") == 1


def cached_files(harness) -> list[str]:
    found = []
    for directory, _, files in os.walk(harness.cache_dir):
        found += [os.path.join(directory, f) for f in files]
    return found


def test_wrong_bytes_abort_every_client_and_cache_nothing(harness):
    data, digest = upstream_blob(harness, 300_000)
    harness.registry.wrong_bytes[digest] = os.urandom(len(data))
    clients = [harness.send("GET", blob_path(digest)) for _ in range(3)]
    harness.pump()

    for client in clients:
        response = client.response()
        assert response.aborted and not response.complete
        assert len(response.body) < len(data)
    assert cached_files(harness) == []

    del harness.registry.wrong_bytes[digest]
    retry = harness.get(blob_path(digest))
    assert retry.body == data and retry.complete
    assert harness.registry.count("GET", "/blobs/") == 2


def cut_upstream(harness, digest: str, at: int) -> None:
    held = harness.registry.held.pop(digest)
    held.send(at - held.sent)
    harness.pump()
    held.cut()
    harness.pump()


def test_an_upstream_that_dies_mid_blob_is_resumed_with_a_range(harness):
    data, digest = held_blob(harness, 300_000)
    client = harness.send("GET", blob_path(digest))
    harness.pump()
    cut_upstream(harness, digest, 123_456)
    assert not client.response().aborted
    harness.registry.hold.clear()

    harness.clock.advance(10)
    harness.pump()

    response = client.response()
    assert response.body == data and response.complete and not response.aborted
    ranged = [s for s in harness.registry.seen if "range" in s.headers]
    assert [s.headers["range"] for s in ranged] == ["bytes=123456-"]
    assert harness.get(blob_path(digest)).headers["x-cache"] == "HIT"


def test_a_resume_from_an_upstream_that_ignores_ranges_skips_what_it_has(harness):
    harness.registry.honour_ranges = False
    data, digest = held_blob(harness, 300_000)
    client = harness.send("GET", blob_path(digest))
    harness.pump()
    cut_upstream(harness, digest, 100_000)
    harness.registry.hold.clear()

    harness.clock.advance(10)
    harness.pump()

    assert client.response().body == data and client.response().complete


def test_an_upstream_that_keeps_dying_aborts_clients_and_caches_nothing(harness):
    data, digest = held_blob(harness, 300_000)
    client = harness.send("GET", blob_path(digest))
    harness.pump()
    for _ in range(4):  # the first try and three resumes
        cut_upstream(harness, digest, 1000)
        harness.clock.advance(10)
        harness.pump()

    response = client.response()
    assert response.status == 200
    assert response.aborted and not response.complete
    assert cached_files(harness) == []
    assert harness.registry.count("GET", "/blobs/") == 4
    harness.registry.hold.clear()
    again = harness.get(blob_path(digest))
    assert again.body == data and again.complete


def test_an_upstream_that_goes_silent_is_resumed(harness):
    data, digest = held_blob(harness, 300_000)
    client = harness.send("GET", blob_path(digest))
    harness.pump()
    harness.registry.held[digest].send(50_000)
    harness.pump()
    harness.registry.hold.clear()

    harness.clock.advance(harness.settings.timeouts.body_silence + 1)
    harness.pump()
    harness.clock.advance(10)
    harness.pump()

    assert client.response().body == data and client.response().complete
    assert [s.headers.get("range") for s in harness.registry.seen if "/blobs/" in s.path] == [None, "bytes=50000-"]


def test_a_mismatch_is_logged_with_the_digest_and_reason(harness):
    from twisted.logger import globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        _, digest = upstream_blob(harness, 1000)
        harness.registry.wrong_bytes[digest] = b"x" * 1000
        harness.get(blob_path(digest))
    finally:
        globalLogPublisher.removeObserver(events.append)
    failures = [e for e in events if e.get("digest") == digest and "reason" in e]
    assert failures and "hashes to" in failures[0]["reason"]


def test_blobs_redirected_to_a_cdn_are_followed(harness):
    harness.registry.redirect_blobs = True
    data, digest = upstream_blob(harness, 70_000)

    assert harness.get(blob_path(digest)).body == data
    assert harness.registry.count("GET", "/data/", host="cdn.fake") == 1


def test_head_of_an_uncached_blob_downloads_nothing(harness):
    data, digest = upstream_blob(harness, 70_000)

    response = harness.head(blob_path(digest))

    assert response.status == 200 and response.headers["content-length"] == str(len(data))
    assert harness.registry.count("HEAD", "/blobs/") == 1
    assert harness.registry.count("GET", "/blobs/") == 0


def test_leftover_spool_files_are_swept_at_start(tmp_path):
    from .harness import Harness

    spool = tmp_path / "cache" / "spool"
    spool.mkdir(parents=True)
    (spool / "half-written").write_bytes(b"partial")

    Harness(str(tmp_path / "cache"))

    assert list(spool.iterdir()) == []


def test_upstream_is_paused_while_the_disk_lags(tmp_path):
    """Memory stays bounded however fast upstream is and however slow the disk."""
    from mirrorproxy.cache.fill.writes import QUEUE_HIGH
    from mirrorproxy.registry.names import Digest

    from .harness import Harness, ManualRunner

    runner = ManualRunner()
    harness = Harness(str(tmp_path / "cache"), run=runner)
    data, digest = held_blob(harness, 3 * QUEUE_HIGH)
    client = harness.send("GET", blob_path(digest))
    for _ in range(5):
        harness.pump()
        runner.run_all()
    held = harness.registry.held[digest]
    held.send(harness.registry.chunk_size)
    for _ in range(5):
        harness.pump()
        runner.run_all()
    fill = harness.mirror.blobs._fills[Digest.parse(digest)]
    assert fill.written == harness.registry.chunk_size

    # Upstream offers everything, as a network would, while no write completes.
    while held.sent < len(data):
        held.send(harness.registry.chunk_size)
        harness.stub.flush()

    # The in-memory transport keeps delivering after a pause (a socket
    # stops), so count the pauses rather than the bytes.
    assert fill.upstream_pauses == 1
    assert fill.written == harness.registry.chunk_size
    for _ in range(200):
        runner.run_all()
        harness.pump()
    response = client.response()
    assert response.body == data and response.complete


def test_a_full_disk_relays_the_blob_whole_and_caches_nothing(tmp_path):
    from .harness import Harness

    harness = Harness(str(tmp_path / "cache"), run=disk_fills_after(2))
    data, digest = held_blob(harness, 1024 * 1024)
    clients = [harness.send("GET", blob_path(digest)) for _ in range(2)]
    harness.pump()
    held = harness.registry.held[digest]
    while held.sent < len(data):
        held.send(harness.registry.chunk_size)
        harness.pump()

    for client in clients:
        response = client.response()
        assert response.body == data and response.complete and not response.aborted
    assert cached_files(harness) == []
    # Relayed whole, yet not cached: counted as the disk failing the fill.
    assert harness.mirror.blobs.failures == {"disk": 1}


def test_a_read_only_cache_relays_the_blob_whole_and_caches_nothing(tmp_path):
    from .harness import Harness, cache_turned_read_only

    harness = Harness(str(tmp_path / "cache"), run=cache_turned_read_only())
    data, digest = held_blob(harness, 3 * 1024 * 1024)
    for attempt in (1, 2):
        client = harness.send("GET", blob_path(digest))
        harness.pump()
        held = harness.registry.held[digest]
        while held.sent < len(data):
            held.send(harness.registry.chunk_size)
            harness.pump()

        response = client.response()
        assert (response.status, response.complete, response.aborted) == (200, True, False)
        assert response.body == data
        assert cached_files(harness) == []
        # Nothing was kept: each request is relayed from a fetch of its own.
        assert harness.registry.count("GET", "/blobs/") == attempt
    assert harness.mirror.blobs.failures == {"disk": 2}


@pytest.mark.parametrize("cache", ["read-only", "full after one write"])
def test_wrong_bytes_are_still_aborted_when_the_cache_cannot_take_them(tmp_path, cache):
    from .harness import Harness, cache_turned_read_only

    run = cache_turned_read_only() if cache == "read-only" else disk_fills_after(1)
    harness = Harness(str(tmp_path / "cache"), run=run)
    data, digest = upstream_blob(harness, 500_000)
    harness.registry.wrong_bytes[digest] = os.urandom(len(data))
    client = harness.send("GET", blob_path(digest))
    harness.pump()

    response = client.response()
    assert response.aborted and not response.complete and len(response.body) < len(data)
    assert cached_files(harness) == []


def test_a_relay_is_paced_by_its_slowest_client_not_by_memory(tmp_path):
    from mirrorproxy.cache.fill.tail import TAIL_HIGH
    from mirrorproxy.registry.names import Digest

    from .harness import Harness

    harness = Harness(str(tmp_path / "cache"), run=disk_fills_after(0))
    data, digest = held_blob(harness, 3 * TAIL_HIGH)
    slow = harness.connect(window=64 * 1024)
    slow.protocol.dataReceived(f"GET {blob_path(digest)} HTTP/1.1\r\nHost: m\r\n\r\n".encode())
    harness.pump()
    held = harness.registry.held[digest]
    fill = harness.mirror.blobs._fills[Digest.parse(digest)]
    while held.sent < len(data):
        held.send(harness.registry.chunk_size)
        harness.stub.flush()

    assert fill.relaying and fill.upstream_pauses >= 1
    slow.transport.open_window()
    harness.pump()
    assert slow.response().body == data and slow.response().complete


# -- a fill paced by its fastest client ---------------------------------------------


@pytest.fixture
def short_lead(monkeypatch):
    from mirrorproxy.cache.fill import followers

    monkeypatch.setattr(followers, "LEAD_HIGH", 400_000)
    monkeypatch.setattr(followers, "LEAD_LOW", 200_000)


def fill_of(harness, digest):
    from mirrorproxy.registry.names import Digest

    return harness.mirror.blobs._fills[Digest.parse(digest)]


def offer(harness, digest, count):
    """Upstream sends `count` more bytes of a held body."""
    harness.registry.held[digest].send(count)
    harness.pump()


def ahead_of_a_stalled_client(harness):
    """A client that stopped reading, and its fill 640 kB ahead of it (past
    the short lead): the blob, its digest, the client and the fill."""
    data, digest = held_blob(harness, 2_000_000)
    client = harness.send("GET", blob_path(digest))
    harness.pump()
    client.pause()
    for _ in range(10):
        offer(harness, digest, 64 * 1024)
    return data, digest, client, fill_of(harness, digest)


def test_a_fill_waits_for_its_only_client_once_far_enough_ahead(harness, short_lead):
    data, digest, client, fill = ahead_of_a_stalled_client(harness)
    assert (fill.lead_pauses, fill._body.paused) == (1, True)
    assert fill.upstream_pauses == 0  # not the disk

    client.resume()
    harness.pump()

    # Caught up: upstream is read again.
    assert not fill._body.paused
    harness.registry.held[digest].finish()
    harness.pump()
    response = client.response()
    assert response.body == data and response.complete
    assert harness.registry.count("GET", "/blobs/") == 1


def test_a_fill_whose_slow_client_leaves_runs_on_at_full_speed(harness, short_lead):
    _, digest, client, fill = ahead_of_a_stalled_client(harness)
    assert fill._body.paused

    client.disconnect()
    harness.pump()

    assert not fill._body.paused
    harness.registry.held[digest].finish()
    harness.pump()
    assert harness.get(blob_path(digest)).headers["x-cache"] == "HIT"


def test_a_fast_client_joining_a_waiting_fill_gets_it_going(harness, short_lead):
    data, digest, slow, fill = ahead_of_a_stalled_client(harness)
    assert fill._body.paused

    fast = harness.send("GET", blob_path(digest))
    harness.pump()

    assert not fill._body.paused
    harness.registry.held[digest].finish()
    harness.pump()
    assert fast.response().body == data and fast.response().complete
    slow.resume()
    harness.pump()
    assert slow.response().body == data


def test_an_idle_connection_dropped_while_waiting_for_a_client_costs_no_retry(harness, short_lead):
    data, digest, client, fill = ahead_of_a_stalled_client(harness)
    assert fill._body.paused
    harness.registry.hold.clear()
    harness.registry.held.pop(digest).cut()
    harness.pump()

    # Nothing is asked for while the client has enough to read.
    harness.clock.advance(60)
    harness.pump()
    assert harness.registry.count("GET", "/blobs/") == 1

    client.resume()
    harness.pump()
    harness.clock.advance(1)
    harness.pump()

    response = client.response()
    assert response.body == data and response.complete
    assert fill.resumes == 0
    ranges = [s.headers.get("range") for s in harness.registry.seen if "/blobs/" in s.path]
    assert ranges == [None, "bytes=655360-"]  # from the ten chunks it had


# -- out of file descriptors -------------------------------------------------------


@pytest.fixture
def descriptors_run_out(monkeypatch):
    """Make the store's Nth descriptor duplication (1-based, for each N in
    `failing`) fail with EMFILE, as under a low `ulimit -n`; returns the
    count of attempts so far, as a one-item list."""
    import errno

    from mirrorproxy.storage.filesystem import FilesystemStore

    def install(failing: set[int]) -> list[int]:
        share = FilesystemStore.share
        attempts = [0]

        def share_or_fail(self, fd: int) -> int:
            attempts[0] += 1
            if attempts[0] in failing:
                raise OSError(errno.EMFILE, "Too many open files")
            return share(self, fd)

        monkeypatch.setattr(FilesystemStore, "share", share_or_fail)
        return attempts

    return install


def test_a_failed_descriptor_before_delivery_fails_only_its_client(harness, descriptors_run_out):
    """One of the clients waiting for upstream's answer cannot get a
    descriptor: it gets a registry error, everyone else the blob, and the
    digest is cached and fetchable."""
    data, digest = held_blob(harness, 300_000)
    descriptors_run_out({3})
    clients = [harness.send("GET", blob_path(digest)) for _ in range(5)]
    harness.pump()
    harness.registry.held[digest].finish()
    harness.pump()

    responses = [c.response() for c in clients]
    refused = [r for r in responses if r.status != 200]
    assert len(refused) == 1
    (error,) = refused[0].json()["errors"]
    assert (refused[0].status, error["code"]) == (503, "TOOMANYREQUESTS")
    assert refused[0].headers["retry-after"].isdigit()
    for response in responses:
        if response.status == 200:
            assert (response.body, response.complete) == (data, True)
    hit = harness.get(blob_path(digest))
    assert (hit.body, hit.headers["x-cache"]) == (data, "HIT")
    assert harness.registry.count("GET", "/blobs/") == 1


def test_a_failed_descriptor_for_a_late_joiner_fails_only_that_joiner(harness, descriptors_run_out):
    data, digest = held_blob(harness, 300_000)
    early = harness.send("GET", blob_path(digest))
    harness.pump()
    harness.registry.held[digest].send(100_000)
    harness.pump()
    attempts = descriptors_run_out({1})

    late = harness.send("GET", blob_path(digest))
    later = harness.send("GET", blob_path(digest))
    harness.registry.held[digest].finish()
    harness.pump()

    assert attempts[0] >= 2
    assert late.response().status == 503
    assert (later.response().body, early.response().body) == (data, data)
    assert harness.get(blob_path(digest)).headers["x-cache"] == "HIT"


def test_a_fill_commits_without_a_spare_descriptor(harness, descriptors_run_out):
    """Committing needs no descriptor of its own: with none to spare, the
    blob still reaches the cache."""
    data, digest = held_blob(harness, 300_000)
    first = harness.send("GET", blob_path(digest))
    harness.pump()
    descriptors_run_out(set(range(1, 100)))

    harness.registry.held[digest].finish()
    harness.pump()

    assert first.response().body == data
    assert os.path.exists(harness.mirror.store.blob_path(harness.mirror.registry.cache_key, Digest.parse(digest)))
    assert harness.get(blob_path(digest)).headers["x-cache"] == "HIT"


def test_a_cache_hit_without_a_descriptor_is_a_503_not_a_500(harness, monkeypatch):
    import errno

    from mirrorproxy.storage import filesystem as store

    data, digest = upstream_blob(harness, 1000)
    harness.get(blob_path(digest))

    def no_descriptors(path):
        raise OSError(errno.EMFILE, "Too many open files", path)

    monkeypatch.setattr(store, "_open_for_reading", no_descriptors)
    response = harness.get(blob_path(digest))

    (error,) = response.json()["errors"]
    assert (response.status, error["code"]) == (503, "TOOMANYREQUESTS")
    assert "retry-after" in response.headers
    monkeypatch.undo()
    assert harness.get(blob_path(digest)).body == data


# -- nothing unverified ends cleanly ---------------------------------------------------


def test_a_range_of_a_running_fill_holds_its_last_byte_until_verified(harness):
    data, digest = held_blob(harness, 300_000)
    first = harness.send("GET", blob_path(digest))
    harness.pump()
    harness.registry.held[digest].send(200_000)
    harness.pump()

    ranged = harness.send("GET", blob_path(digest), {"Range": "bytes=0-99"})
    harness.pump()
    response = ranged.response()
    assert response.status == 206 and response.body == data[:99] and not response.complete

    harness.registry.held[digest].finish()
    harness.pump()
    response = ranged.response()
    assert (response.body, response.complete) == (data[:100], True)
    assert first.response().body == data


def test_a_range_of_wrong_bytes_never_ends_cleanly(harness):
    """`curl -r 0-99` of a blob upstream sends wrong: never a whole 206."""
    data, digest = held_blob(harness, 300_000)
    wrong = os.urandom(len(data))
    harness.registry.wrong_bytes[digest] = wrong
    first = harness.send("GET", blob_path(digest))
    harness.pump()
    harness.registry.held[digest].send(200_000)
    harness.pump()

    ranged = harness.send("GET", blob_path(digest), {"Range": "bytes=0-99"})
    harness.pump()
    harness.registry.held[digest].finish()
    harness.pump()

    response = ranged.response()
    assert response.aborted and not response.complete
    assert len(response.body) < 100
    assert first.response().aborted


def lengthless(harness, digest: str) -> None:
    """Upstream sends this blob without a Content-Length (chunked)."""
    harness.registry.lengthless.add(digest)


@pytest.mark.parametrize("right", [True, False], ids=["right bytes", "wrong bytes"])
def test_a_blob_without_a_length_holds_its_last_byte_until_verified(harness, right):
    data, digest = held_blob(harness, 300_000)
    if not right:
        harness.registry.wrong_bytes[digest] = os.urandom(len(data))
    lengthless(harness, digest)
    client = harness.send("GET", blob_path(digest))
    harness.pump()
    held = harness.registry.held[digest]
    held.send(len(data))
    harness.pump()

    response = client.response()
    assert len(response.body) < len(data) and not response.complete

    held.request.finish()
    harness.pump()
    response = client.response()
    if right:
        assert (response.body, response.complete) == (data, True)
    else:
        assert response.aborted and not response.complete and len(response.body) < len(data)


# -- a response's hold on a blob ------------------------------------------------------


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def in_use(harness) -> set[str]:
    return {digest for _, digest in harness.mirror.blobs.in_use()}


def test_an_open_blob_gives_back_its_descriptor_and_its_hold_when_closed(harness):
    from twisted.internet.defer import Deferred

    _, digest = upstream_blob(harness, 1000)
    harness.get(blob_path(digest))
    before = open_descriptors()

    opening = Deferred.fromCoroutine(harness.mirror.blobs.open("library/busybox", Digest.parse(digest)))
    opened = opening.result
    assert open_descriptors() == before + 1 and in_use(harness) == {digest}

    with opened:
        pass
    opened.close()  # closing again is harmless

    assert open_descriptors() == before and in_use(harness) == set()


def test_a_streaming_response_holds_its_blob_until_it_is_over(harness):
    data, digest = upstream_blob(harness, 2 * 1024 * 1024)
    harness.get(blob_path(digest))
    before = open_descriptors()
    client = harness.connect(window=64 * 1024)  # stops reading after 64 KiB
    client.protocol.dataReceived(f"GET {blob_path(digest)} HTTP/1.1\r\nHost: m\r\n\r\n".encode())
    harness.pump()
    assert in_use(harness) == {digest}

    client.transport.open_window()
    harness.pump()

    assert client.response().body == data
    assert in_use(harness) == set() and open_descriptors() == before


def test_a_refused_range_gives_back_its_descriptor_and_its_hold(harness):
    _, digest = upstream_blob(harness, 1000)
    harness.get(blob_path(digest))
    before = open_descriptors()

    response = harness.get(blob_path(digest), range="bytes=5000-")

    assert response.status == 416
    assert in_use(harness) == set() and open_descriptors() == before
