"""The S3 store (mirrorproxy.storage.s3) against real S3 servers: the storage
contract every store passes (tests/storagecontract.py), then what only an
object store has to get right: multipart uploads in bounded memory, two
nodes committing the same digest, the server refusing bytes that are not
what their hash says, presigned URLs, interrupted uploads cleaned up.

The servers are the fixtures in `S3_SERVICES`, each an `S3Service`; every
test runs against each, on the real reactor (the byte path is treq).  The
tests are written as plain sequences of calls, so each runs in a thread of
its own and waits for the store's coroutines, which run on the reactor
(pytest-twisted runs the reactor in the test's own greenlet, where nothing
can wait for it).
"""

from __future__ import annotations

import functools
import hashlib
import os
import tracemalloc
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.web.client import Agent, HTTPConnectionPool

from mirrorproxy.registry.names import Digest
from mirrorproxy.storage.values import CacheDirError
from mirrorproxy.storage.s3 import ops
from mirrorproxy.storage.s3.location import S3Endpoint, S3Location, S3LocationInvalid
from mirrorproxy.storage.s3.store import S3Blob, S3Store

from .. import storagecontract
from ..storagecontract import *  # noqa: F403 - the contract's tests and fixtures
from ..storagecontract import HUB, Implementation, commit, digest_of
from .harness.s3service import S3Service

pytestmark = pytest.mark.integration

# The fixtures that start an S3 server; each yields an S3Service.
# SeaweedFS for speed; Ceph RGW because it checks payload hashes and
# signatures strictly (SeaweedFS stores a body whose declared sha256 is wrong).
S3_SERVICES = ["seaweedfs", "ceph_rgw"]
PREFIX = "cache/"
MiB = 1024 * 1024


def in_reactor(f: Callable[..., Any], *args: Any) -> Any:
    """From a test's thread: `f`'s result (a Deferred's, waited for) on the reactor thread."""
    return blockingCallFromThread(reactor, f, *args)


def blocking(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """From a test's thread: the result of a store's coroutine, run on the reactor."""
    return in_reactor(Deferred.fromCoroutine, coroutine)


def in_a_thread(test: Callable[..., None]) -> Callable[..., Deferred[None]]:
    """`test`, run in a thread of its own while the reactor runs."""

    @functools.wraps(test)
    def threaded(**fixtures: Any) -> Deferred[None]:
        return deferToThread(test, **fixtures)

    return threaded


# The contract's tests, each in a thread.
for _name, _test in vars(storagecontract).items():
    if _name.startswith("test_") and callable(_test):
        globals()[_name] = in_a_thread(_test)


def in_threads(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
    return deferToThread(f, *args, **kwargs)


@pytest.fixture(params=S3_SERVICES)
def s3(request: pytest.FixtureRequest) -> S3Service:
    service: S3Service = request.getfixturevalue(request.param)
    return service


@pytest.fixture
def http() -> Iterator[HTTPClient]:
    """The stores' HTTP client, its connections closed after the test."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    yield HTTPClient(Agent(reactor, pool=pool))
    pytest_twisted.blockon(pool.closeCachedConnections())


def make_store(service: S3Service, bucket: str, local: Path, http: Any, **options: Any) -> S3Store:
    session = botocore.session.Session()
    session.set_credentials(service.access_key, service.secret_key)
    endpoint = S3Endpoint(service.endpoint, service.region)
    location = S3Location(bucket, PREFIX)
    return S3Store.open(session, endpoint, location, str(local), in_threads, http, reactor, **options)


def held(store: S3Store) -> set[str]:
    """Every object in the store's bucket, and every file of its local directory."""
    objects = {f"s3:{found.key}" for found in store.bucket.listing("")}
    files = {
        os.path.relpath(os.path.join(directory, name), store.local)
        for directory, _, names in os.walk(store.local)
        for name in names
    }
    return objects | files


def break_commits(store: S3Store, registry: str) -> Callable[[], None]:
    # Its keys stop working: the server refuses every request they sign.
    credentials = store.bucket.credentials
    secret = credentials.secret_key
    credentials.secret_key = "not-the-secret"
    return lambda: setattr(credentials, "secret_key", secret)


def age(store: S3Store, registry: str, digest: Digest, seconds: float) -> None:
    used = ops.last_use(store.bucket, registry, digest)
    assert used is not None
    ops.set_last_use(store.bucket, registry, digest, used - seconds)


def reopen(store: S3Store) -> S3Store:
    return S3Store(store.bucket, store.local, in_threads, store._treq, reactor)


@pytest.fixture
def implementation(s3: S3Service, http: HTTPClient) -> Implementation:
    return Implementation(
        s3.name,
        make=lambda place: make_store(s3, s3.new_bucket(), place / "local", http),
        reopen=reopen,
        held=held,
        break_commits=break_commits,
        age=age,
        removed_behind_its_back=lambda store: store.bucket.stamp_changed(),
        run=blocking,
        reads_outlive_removal=False,
    )


# -- what only an object store has to get right -----------------------------------


def spool_of(store: S3Store, size: int) -> tuple[Any, Digest]:
    """A spool of `size` random bytes written a MiB at a time, and their digest."""
    spool = blocking(store.new_spool())
    hasher = hashlib.sha256()
    offset = 0
    while offset < size:
        offset += blocking(store.write_spool(spool, offset, [os.urandom(min(MiB, size - offset))], hasher))
    return spool, Digest(hasher.hexdigest())


def spool_hash(spool: Any) -> str:
    hasher = hashlib.sha256()
    offset = 0
    while chunk := os.pread(spool.fd, MiB, offset):
        hasher.update(chunk)
        offset += len(chunk)
    return hasher.hexdigest()


def blob_keys(store: S3Store) -> list[str]:
    return [found.key for found in store.bucket.listing(f"{PREFIX}{HUB}/blobs/")]


def uploads_left(store: S3Store) -> list[str]:
    found = store.bucket.client.list_multipart_uploads(Bucket=store.bucket.name)
    return [upload["Key"] for upload in found.get("Uploads", [])]


def read_hash(store: S3Store, digest: Digest) -> str:
    """The sha256 of the stored blob, read back a MiB at a time."""
    opened = blocking(store.open_blob(HUB, digest))
    hasher = hashlib.sha256()
    for offset in range(0, opened.size, MiB):
        hasher.update(blocking(opened.read(offset, MiB)))
    opened.close()
    return hasher.hexdigest()


@pytest.fixture
def bucket(s3: S3Service) -> str:
    return s3.new_bucket()


@in_a_thread
def test_a_large_blob_goes_up_in_parts_without_being_held_in_memory(s3, http, bucket, tmp_path):
    store = make_store(s3, bucket, tmp_path, http, multipart_threshold=8 * MiB, part_size=8 * MiB)
    store.prepare()
    blocking(store.measure())
    spool, digest = spool_of(store, 20 * MiB)

    tracemalloc.start()
    try:
        blocking(store.commit_blob(spool, HUB, digest))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    os.close(spool.fd)

    # Neither the blob nor one of its 8 MiB parts was ever held whole.
    assert peak < 4 * MiB, f"{peak} bytes held at once"
    head = store.bucket.client.head_object(Bucket=bucket, Key=store.bucket.keys.blob(HUB, digest))
    assert head["ETag"].strip('"').endswith("-3")  # S3's mark of a 3-part upload
    assert read_hash(store, digest) == digest.hex
    assert (store.bytes, store.entries) == (20 * MiB, 1)
    assert uploads_left(store) == []


@pytest.mark.parametrize("size", [100_000, 12 * MiB], ids=["put", "multipart"])
@in_a_thread
def test_two_nodes_committing_the_same_digest_both_succeed_and_keep_one_blob(
    s3, http, bucket, tmp_path, size
):
    nodes = [
        make_store(s3, bucket, tmp_path / name, http, multipart_threshold=8 * MiB, part_size=5 * MiB)
        for name in ("one", "two")
    ]
    for node in nodes:
        node.prepare()
    first, digest = spool_of(nodes[0], size)
    second = blocking(nodes[1].new_spool())
    data = os.pread(first.fd, size, 0)
    blocking(nodes[1].write_spool(second, 0, [data], hashlib.sha256()))

    results = in_reactor(
        lambda: DeferredList(
            [
                Deferred.fromCoroutine(nodes[0].commit_blob(first, HUB, digest)),
                Deferred.fromCoroutine(nodes[1].commit_blob(second, HUB, digest)),
            ],
            consumeErrors=True,
        )
    )

    assert [ok for ok, _ in results] == [True, True], results
    assert blob_keys(nodes[0]) == [nodes[0].bucket.keys.blob(HUB, digest)]
    assert read_hash(nodes[1], digest) == digest.hex
    assert uploads_left(nodes[0]) == []
    assert [node.writes.failures for node in nodes] == [0, 0]
    blocking(nodes[0].measure())
    assert (nodes[0].bytes, nodes[0].entries) == (size, 1)
    for spool in (first, second):
        os.close(spool.fd)


@pytest.mark.parametrize("size", [100_000, 6 * MiB], ids=["put", "multipart"])
@in_a_thread
def test_a_commit_never_overwrites_what_is_already_at_its_key(s3, http, bucket, tmp_path, size):
    store = make_store(s3, bucket, tmp_path, http, multipart_threshold=5 * MiB, part_size=5 * MiB)
    store.prepare()
    blocking(store.measure())
    spool, digest = spool_of(store, size)
    key = store.bucket.keys.blob(HUB, digest)
    # Another node's object, made different here so that an overwrite would show.
    store.bucket.client.put_object(Bucket=bucket, Key=key, Body=b"another node's")

    blocking(store.commit_blob(spool, HUB, digest))
    os.close(spool.fd)

    assert store.bucket.client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"another node's"
    assert (store.bytes, store.entries) == (0, 0)  # nothing added
    assert uploads_left(store) == []
    assert not os.path.exists(spool.path)


@in_a_thread
def test_bytes_that_are_not_what_their_digest_says_are_refused_by_the_server(s3, http, bucket, tmp_path):
    store = make_store(s3, bucket, tmp_path, http)
    store.prepare()
    spool, _ = spool_of(store, 50_000)
    wrong = digest_of(b"some other layer")

    # One PUT: the store sends the declared sha256 and does not hash the
    # spool again, so only the server can notice.
    with pytest.raises(OSError) as refused:
        blocking(store.commit_blob(spool, HUB, wrong))
    os.close(spool.fd)

    assert "BadDigest" in str(refused.value) or "SHA256Mismatch" in str(refused.value)
    assert blob_keys(store) == []
    assert not os.path.exists(spool.path)
    assert store.writes.failures == 1


@in_a_thread
def test_a_large_blob_not_what_its_digest_says_is_not_completed(s3, http, bucket, tmp_path):
    store = make_store(s3, bucket, tmp_path, http, multipart_threshold=5 * MiB, part_size=5 * MiB)
    store.prepare()
    spool, _ = spool_of(store, 11 * MiB)

    with pytest.raises(OSError, match="the spool is not"):
        blocking(store.commit_blob(spool, HUB, digest_of(b"another")))
    os.close(spool.fd)

    assert blob_keys(store) == []
    assert uploads_left(store) == []


@in_a_thread
def test_a_presigned_url_fetches_the_exact_bytes_without_credentials(s3, http, bucket, tmp_path):
    store = make_store(s3, bucket, tmp_path, http)
    store.prepare()
    spool, digest = spool_of(store, 300_000)
    data = os.pread(spool.fd, 300_000, 0)
    blocking(store.commit_blob(spool, HUB, digest))
    os.close(spool.fd)

    url = blocking(store.presigned_get(HUB, digest, 600))
    response = in_reactor(http.get, url)
    body = in_reactor(response.content)

    assert response.code == 200
    assert hashlib.sha256(body).hexdigest() == digest.hex and body == data
    # The signature covers the key: another blob's URL is not made from this one.
    other = url.replace(digest.hex, digest_of(b"other").hex)
    refused = in_reactor(http.get, other)
    in_reactor(refused.content)
    assert refused.code == 403
    # SigV4 signs for a week at most.
    with pytest.raises(ValueError, match="expires in 1 to 604800 seconds, not 604801"):
        blocking(store.presigned_get(HUB, digest, 7 * 24 * 3600 + 1))


class _CancelAtPart:
    """The stores' HTTP client, cancelling a commit once it sends part `number`."""

    def __init__(self, http: HTTPClient, number: int) -> None:
        self._http, self._number = http, number
        self.commit: Deferred[None] | None = None
        self.parts_sent = 0

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        sent = self._http.request(method, url, **kwargs)
        if "partNumber=" in url:
            self.parts_sent += 1
            if self.parts_sent == self._number and self.commit is not None:
                reactor.callLater(0, self.commit.cancel)
        return sent


@in_a_thread
def test_an_interrupted_upload_leaves_no_parts_and_no_blob(s3, http, bucket, tmp_path):
    interrupting = _CancelAtPart(http, number=2)
    store = make_store(
        s3, bucket, tmp_path, interrupting, multipart_threshold=5 * MiB, part_size=5 * MiB
    )
    store.prepare()
    spool, digest = spool_of(store, 15 * MiB)

    def start() -> Deferred[None]:
        interrupting.commit = Deferred.fromCoroutine(store.commit_blob(spool, HUB, digest))
        return interrupting.commit

    with pytest.raises(CancelledError):
        in_reactor(start)

    assert interrupting.parts_sent == 2  # it was interrupted mid-upload
    assert uploads_left(store) == []
    assert blob_keys(store) == []
    assert not os.path.exists(spool.path)
    # The spool's descriptor is still the caller's, whole.
    assert spool_hash(spool) == digest.hex
    os.close(spool.fd)


@in_a_thread
def test_a_blob_served_again_within_the_hour_costs_no_request(s3, http, bucket, tmp_path):
    store = make_store(s3, bucket, tmp_path, http)
    store.prepare()
    digest = commit(blocking, store, b"a layer")
    calls: list[str] = []
    store.bucket.client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))

    blocking(store.mark_used(HUB, digest))
    first = list(calls)
    blocking(store.mark_used(HUB, digest))

    assert first == ["HeadObject", "ListObjectsV2"]  # checked once (and fresh: nothing written)
    assert calls == first


def test_keys_come_from_the_environment_the_aws_way(s3, http, bucket, tmp_path, monkeypatch):
    for name, value in s3.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    endpoint = S3Endpoint(s3.endpoint, s3.region)
    store = S3Store.open(
        botocore.session.Session(), endpoint, S3Location(bucket), str(tmp_path), in_threads, http, reactor
    )

    assert store.prepare() == 0

    for name in s3.environment():
        monkeypatch.delenv(name)
    without = S3Store.open(
        botocore.session.Session(), endpoint, S3Location(bucket), str(tmp_path), in_threads, http, reactor
    )
    with pytest.raises(CacheDirError) as refused:
        without.prepare()
    assert str(refused.value).startswith(f"S3 storage s3://{bucket}/ is not usable: ")
    assert "credentials" in str(refused.value) and "\n" not in str(refused.value)


def test_a_bucket_that_is_not_there_is_refused_at_start(s3, http, tmp_path):
    store = make_store(s3, "no-such-bucket-here", tmp_path, http)

    with pytest.raises(CacheDirError) as refused:
        store.prepare()

    assert "s3://no-such-bucket-here/cache/ is not usable" in str(refused.value)
    assert "NoSuchBucket" in str(refused.value) and "\n" not in str(refused.value)


# -- where the store is -------------------------------------------------------------


@pytest.mark.parametrize(
    "url, bucket, prefix",
    [
        ("s3://mirror", "mirror", ""),
        ("s3://mirror/", "mirror", ""),
        ("s3://my.mirror-1/cache", "my.mirror-1", "cache/"),
        ("s3://mirror/site/a_1/", "mirror", "site/a_1/"),
    ],
)
def test_a_location_is_parsed_from_its_url(url, bucket, prefix):
    location = S3Location.parse(url)
    assert (location.bucket, location.prefix) == (bucket, prefix)
    assert str(location) == f"s3://{bucket}/{prefix}"


@pytest.mark.parametrize(
    "url, says",
    [
        ("https://mirror/cache", "is not an S3 location: expected s3://BUCKET/PREFIX"),
        ("s3://key:secret@mirror/cache", "without credentials, port, query or fragment"),
        ("s3://mirror/cache?x=1", "without credentials, port, query or fragment"),
        ("s3://Mirror/cache", "'Mirror' is not a bucket name"),
        ("s3://ab", "'ab' is not a bucket name"),
        ("s3://10.0.0.1/cache", "'10.0.0.1' is not a bucket name"),
        ("s3://mirror//cache", "the prefix may hold only"),
        ("s3://mirror/../cache", "the prefix may hold only"),
        ("s3://mirror/a b", "the prefix may hold only"),
    ],
)
def test_a_bad_location_is_refused_in_one_line(url, says):
    with pytest.raises(S3LocationInvalid) as refused:
        S3Location.parse(url)
    assert says in str(refused.value) and "\n" not in str(refused.value)


# -- a server that stops answering ----------------------------------------------------


class _Silent(Protocol):
    """Reads whatever comes, answers nothing."""

    def dataReceived(self, data: bytes) -> None:
        self.factory.received += len(data)  # type: ignore[attr-defined]


@pytest.fixture
def silent_endpoint() -> Iterator[tuple[str, Any]]:
    factory = Factory.forProtocol(_Silent)
    factory.received = 0  # type: ignore[attr-defined]
    port = pytest_twisted.blockon(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory))
    yield f"http://127.0.0.1:{port.getHost().port}", factory
    pytest_twisted.blockon(port.stopListening())


@pytest.mark.parametrize("direction", ["read", "upload"])
@in_a_thread
def test_a_transfer_the_server_stops_answering_fails_after_the_silence(
    s3, http, tmp_path, silent_endpoint, direction
):
    url, server = silent_endpoint
    silent = S3Service("silent", url, s3.region, s3.access_key, s3.secret_key)
    store = make_store(silent, "silent-bucket", tmp_path, http, silence=0.5)
    os.makedirs(store.spool_dir)
    spool = blocking(store.new_spool())
    blocking(store.write_spool(spool, 0, [b"x" * 300_000], hashlib.sha256()))
    digest = digest_of(b"x" * 300_000)

    started = reactor.seconds()
    with pytest.raises(OSError, match=r"no progress for 0\.5 s"):
        if direction == "read":
            opened = S3Blob(store._transfer, store.bucket.keys.blob(HUB, digest), 300_000)
            blocking(opened.read(0, 1000))
        else:
            blocking(store.commit_blob(spool, HUB, digest))
    os.close(spool.fd)

    assert 0.5 <= reactor.seconds() - started < 5
    if direction == "upload":
        assert server.received > 300_000  # the body went out whole; then nothing came back
        assert store.writes.failures == 1
