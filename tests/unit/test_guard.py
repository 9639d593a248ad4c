"""Client access control as a client sees it: 401 with a Basic challenge,
403 for foreign networks, 200 and the right bytes for the right people; and
bcrypt kept off the reactor thread and paid once per user, not per request.

The mirror's real Site is driven over StringTransports whose peer addresses
the tests choose (nothing is sent anywhere); bcrypt runs through an injected
runner, inline or held until the test releases it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

import bcrypt
import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import StringTransport
from twisted.python import usage

from mirrorproxy.api.guard import (
    CACHE_ENTRIES,
    RELOAD_CHECK_INTERVAL,
    AccessSettings,
    HtpasswdError,
    guard,
    parse_htpasswd,
)
from mirrorproxy.server.channel import MirrorSite
from mirrorproxy.server.tap import Options

from .harness import Client, Harness, ManualRunner, Response, run_inline

# Written by `htpasswd -nbB alice 's3cret pass'` (Apache's htpasswd 2.4): the
# `$2y$` variant at cost 5, exactly what operators will hand the mirror.
ALICE_LINE = b"alice:$2y$05$FMGt5FBFJXGN3wULCI.dju2H7ouzPUXxBbOwwECnDxPKrDeU4nDLi"
ALICE = ("alice", "s3cret pass")
# Python's bcrypt writes `$2b$`; cost 4 keeps the tests fast.
BOB = ("bob", "hunter2")
BOB_LINE = b"bob:" + bcrypt.hashpw(BOB[1].encode(), bcrypt.gensalt(4))

REPO = "library/alpine"
MANIFEST = (
    b'{"schemaVersion": 2, "config": {"mediaType": "application/vnd.oci.image.config.v1+json",'
    b' "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},'
    b' "layers": []}'
)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INSIDE = IPv4Address("TCP", "10.1.2.3", 40000)
OUTSIDE = IPv4Address("TCP", "192.0.2.7", 40000)


def basic(user: str, password: str | bytes) -> str:
    secret = password if isinstance(password, bytes) else password.encode()
    return "Basic " + base64.b64encode(user.encode() + b":" + secret).decode()


def error_code(response: Response) -> str:
    (error,) = json.loads(response.body)["errors"]
    return error["code"]


class Guarded:
    """The unit harness's mirror with the access guard in front of it."""

    def __init__(self, harness: Harness, settings: AccessSettings, run=run_inline) -> None:
        self.harness = harness
        root = guard(harness.site.resource, settings, run, harness.clock)
        self.site = MirrorSite(root, reactor=harness.clock)

    def send(self, method: str, path: str, headers: dict[str, str], peer=INSIDE) -> Client:
        protocol = self.site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        client = Client(transport, protocol)
        lines = [f"{method} {path} HTTP/1.1", "Host: mirror.test"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        return client

    def request(self, method: str, path: str, peer=INSIDE, **headers: str) -> Response:
        client = self.send(method, path, headers, peer)
        self.harness.pump()
        response = client.response()
        assert response is not None, client.transport.value()[:300]
        return response

    def get(self, path: str, peer=INSIDE, **headers: str) -> Response:
        return self.request("GET", path, peer, **headers)


@pytest.fixture
def htpasswd(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_bytes(b"# mirror users\n" + ALICE_LINE + b"\n\n" + BOB_LINE + b"\n")
    return path


@pytest.fixture
def guarded(harness, htpasswd):
    harness.registry.add_manifest(REPO, "latest", MANIFEST, OCI_MANIFEST)
    return Guarded(harness, AccessSettings(htpasswd=str(htpasswd)))


def passwords_of(guarded: Guarded):
    return guarded.site.resource._passwords


# -- the htpasswd file ----------------------------------------------------------


def test_htpasswd_from_apache_and_from_python_bcrypt_are_read():
    entries = parse_htpasswd(ALICE_LINE + b"\n" + BOB_LINE + b"\n", "users")
    assert sorted(entries) == [b"alice", b"bob"]


@pytest.mark.parametrize(
    "line",
    [
        b"carol:$apr1$Xr0n4YzN$8jPz8Rj0bnZzUu2zH1W0s/",  # htpasswd -m (MD5)
        b"carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",  # htpasswd -s
        b"carol:rqXexS6ZhobKA",  # htpasswd -d (crypt)
        b"carol:plaintext-password",  # htpasswd -p
        b"carol:$2y$05$tooshort",
    ],
)
def test_non_bcrypt_entries_are_refused_naming_the_line_not_the_hash(line):
    with pytest.raises(HtpasswdError) as raised:
        parse_htpasswd(ALICE_LINE + b"\n\n" + line + b"\n", "/etc/mirrorproxy/htpasswd")
    message = str(raised.value)
    assert "/etc/mirrorproxy/htpasswd, line 3" in message
    assert "htpasswd -B" in message
    assert line.partition(b":")[2].decode() not in message


@pytest.mark.parametrize("data", [b"just-a-name\n", b":$2y$05$" + b"a" * 53 + b"\n"])
def test_lines_that_are_not_user_and_hash_are_refused(data):
    with pytest.raises(HtpasswdError, match="line 1: not a 'user:hash' line"):
        parse_htpasswd(data, "f")


def test_a_user_listed_twice_is_refused():
    with pytest.raises(HtpasswdError, match="line 2: user 'alice' appears twice"):
        parse_htpasswd(ALICE_LINE + b"\n" + ALICE_LINE + b"\n", "f")


def test_an_unreadable_htpasswd_file_is_a_clear_error_at_start(harness, tmp_path):
    settings = AccessSettings(htpasswd=str(tmp_path / "missing"))
    with pytest.raises(HtpasswdError, match="cannot read htpasswd file .*missing"):
        guard(harness.site.resource, settings, run_inline, harness.clock)


# -- 401 and 200 ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v2/", f"/v2/{REPO}/manifests/latest"])
def test_without_credentials_the_answer_is_401_with_a_basic_challenge(guarded, path):
    response = guarded.get(path)

    assert response.status == 401
    assert response.headers["www-authenticate"] == 'Basic realm="mirrorproxy"'
    # dockerd's ping looks for this header to know it talks to a v2 registry.
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    assert error_code(response) == "UNAUTHORIZED"
    assert guarded.harness.registry.seen == []


@pytest.mark.parametrize(
    "authorization",
    [
        basic("alice", "wrong"),
        basic("mallory", "s3cret pass"),
        basic("alice", ""),
        basic("alice", "s3cret pass" + "x" * 80),
        "Basic not-base64!",
        "Bearer " + base64.b64encode(b"alice:s3cret pass").decode(),
        "Basic " + base64.b64encode(b"alice").decode(),
    ],
)
def test_wrong_or_malformed_credentials_are_401(guarded, authorization):
    response = guarded.get(f"/v2/{REPO}/manifests/latest", authorization=authorization)

    assert response.status == 401
    assert response.headers["www-authenticate"] == 'Basic realm="mirrorproxy"'
    assert error_code(response) == "UNAUTHORIZED"
    assert guarded.harness.registry.seen == []


@pytest.mark.parametrize("user", [ALICE, BOB])
def test_right_credentials_reach_the_registry(guarded, user):
    base = guarded.get("/v2/", authorization=basic(*user))
    manifest = guarded.get(f"/v2/{REPO}/manifests/latest", authorization=basic(*user))
    head = guarded.request("HEAD", f"/v2/{REPO}/manifests/latest", authorization=basic(*user))

    assert (base.status, base.body) == (200, b"{}")
    assert (manifest.status, manifest.body) == (200, MANIFEST)
    assert manifest.headers["content-type"] == OCI_MANIFEST
    assert (head.status, head.body) == (200, b"")
    assert head.headers["content-length"] == str(len(MANIFEST))


def test_a_pull_costs_one_bcrypt_check_however_many_requests(guarded):
    layers = [os.urandom(100) for _ in range(50)]
    guarded.harness.registry.add_image("library/big", "v1", layers)
    auth = basic(*ALICE)

    assert guarded.get("/v2/", authorization=auth).status == 200
    for layer in layers:
        digest = "sha256:" + hashlib.sha256(layer).hexdigest()
        response = guarded.get(f"/v2/library/big/blobs/{digest}", authorization=auth)
        assert (response.status, response.body) == (200, layer)

    assert passwords_of(guarded).bcrypt_checks == 1


def test_a_remembered_success_does_not_admit_another_password(guarded):
    assert guarded.get("/v2/", authorization=basic(*ALICE)).status == 200
    assert guarded.get("/v2/", authorization=basic("alice", "s3cret pasS")).status == 401
    assert guarded.get("/v2/", authorization=basic("bob", ALICE[1])).status == 401
    assert guarded.get("/v2/", authorization=basic(*ALICE)).status == 200


def test_failures_are_not_remembered(guarded):
    for _ in range(3):
        assert guarded.get("/v2/", authorization=basic("alice", "guess")).status == 401
    assert passwords_of(guarded).bcrypt_checks == 3


def test_remembered_successes_are_bounded(guarded):
    passwords = passwords_of(guarded)
    for n in range(CACHE_ENTRIES + 5):
        passwords._good[(b"u", str(n).encode(), b"h")] = None
    assert guarded.get("/v2/", authorization=basic(*ALICE)).status == 200
    assert len(passwords._good) == CACHE_ENTRIES
    assert guarded.get("/v2/", authorization=basic(*ALICE)).status == 200
    assert passwords.bcrypt_checks == 1


# -- bcrypt off the reactor thread ------------------------------------------------------


def test_bcrypt_runs_in_the_runner_not_on_the_reactor_thread(harness, htpasswd):
    runner = ManualRunner()
    harness.registry.add_manifest(REPO, "latest", MANIFEST, OCI_MANIFEST)
    guarded = Guarded(harness, AccessSettings(htpasswd=str(htpasswd)), run=runner)
    runner.run_one("dummy_hash")  # made at load, for unknown users

    client = guarded.send("GET", f"/v2/{REPO}/manifests/latest", {"Authorization": basic(*ALICE)})
    harness.pump()
    assert client.response() is None, "answered before the check ran"
    assert len(runner.jobs) == 1

    runner.run_all()
    harness.pump()
    response = client.response()
    assert response is not None and (response.status, response.body) == (200, MANIFEST)


def test_concurrent_requests_with_the_same_credentials_share_one_check(harness, htpasswd):
    runner = ManualRunner()
    guarded = Guarded(harness, AccessSettings(htpasswd=str(htpasswd)), run=runner)
    runner.run_one("dummy_hash")
    clients = [guarded.send("GET", "/v2/", {"Authorization": basic(*ALICE)}) for _ in range(5)]
    wrong = guarded.send("GET", "/v2/", {"Authorization": basic("alice", "nope")})

    assert runner.run_all() == 2
    assert [c.response().status for c in clients] == [200] * 5
    assert wrong.response().status == 401


def test_a_client_gone_during_the_check_gets_nothing_and_breaks_nothing(harness, htpasswd):
    runner = ManualRunner()
    guarded = Guarded(harness, AccessSettings(htpasswd=str(htpasswd)), run=runner)
    gone = guarded.send("GET", "/v2/", {"Authorization": basic(*ALICE)})
    stays = guarded.send("GET", "/v2/", {"Authorization": basic(*ALICE)})
    gone.disconnect()
    written = gone.transport.value()

    runner.run_all()

    assert gone.transport.value() == written == b""
    assert stays.response().status == 200


# -- the file changes -----------------------------------------------------------------


def test_an_edited_htpasswd_file_takes_effect(guarded, htpasswd):
    auth_old, auth_new = basic(*ALICE), basic("alice", "new pass")
    assert guarded.get("/v2/", authorization=auth_old).status == 200
    line = b"alice:" + bcrypt.hashpw(b"new pass", bcrypt.gensalt(4))
    htpasswd.write_bytes(line + b"\n")
    os.utime(htpasswd, ns=(0, 10**18))  # a different mtime, however fast the test

    # The file is looked at again only after a short interval.
    assert guarded.get("/v2/", authorization=auth_old).status == 200
    guarded.harness.clock.advance(RELOAD_CHECK_INTERVAL)

    assert guarded.get("/v2/", authorization=auth_old).status == 401
    assert guarded.get("/v2/", authorization=auth_new).status == 200
    assert guarded.get("/v2/", authorization=basic(*BOB)).status == 401


def test_a_broken_edit_keeps_the_accounts_that_worked(guarded, htpasswd):
    htpasswd.write_bytes(ALICE_LINE + b"\nbob:$apr1$abc$def\n")
    os.utime(htpasswd, ns=(0, 10**18))
    guarded.harness.clock.advance(RELOAD_CHECK_INTERVAL)

    assert guarded.get("/v2/", authorization=basic(*BOB)).status == 200

    htpasswd.unlink()
    guarded.harness.clock.advance(RELOAD_CHECK_INTERVAL)
    assert guarded.get("/v2/", authorization=basic(*ALICE)).status == 200
    assert guarded.get("/v2/", authorization=basic("alice", "x")).status == 401


# -- user names cannot be told apart by timing ------------------------------------


def cost_of(hashed: bytes) -> int:
    return int(hashed.split(b"$")[2])


@pytest.fixture
def checked_costs(monkeypatch):
    """The bcrypt cost of every hash a password is checked against."""
    costs: list[int] = []
    checkpw = bcrypt.checkpw

    def recording(password: bytes, hashed: bytes) -> bool:
        costs.append(cost_of(hashed))
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", recording)
    return costs


@pytest.mark.parametrize("cost", [4, 6])
def test_an_unknown_user_costs_a_check_of_the_files_own_cost(harness, tmp_path, checked_costs, cost):
    """A wrong user name must take as long as a wrong password: with a
    cheaper dummy hash, a client could list which accounts exist."""
    path = tmp_path / "htpasswd"
    path.write_bytes(b"carol:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(cost)) + b"\n")
    guarded = Guarded(harness, AccessSettings(htpasswd=str(path)))

    assert guarded.get("/v2/", authorization=basic("carol", "wrong")).status == 401
    assert guarded.get("/v2/", authorization=basic("mallory", "wrong")).status == 401

    assert checked_costs == [cost, cost]


def test_the_dummy_follows_the_file_when_its_cost_changes(guarded, htpasswd, checked_costs):
    htpasswd.write_bytes(b"alice:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(7)) + b"\n")
    os.utime(htpasswd, ns=(0, 10**18))
    guarded.harness.clock.advance(RELOAD_CHECK_INTERVAL)

    assert guarded.get("/v2/", authorization=basic("mallory", "wrong")).status == 401

    assert checked_costs == [7]


# -- client networks ------------------------------------------------------------------


@pytest.fixture
def networks(harness):
    harness.registry.add_manifest(REPO, "latest", MANIFEST, OCI_MANIFEST)
    settings = AccessSettings.from_options(None, ["10.0.0.0/8", "2001:db8:1::/48", "127.0.0.1"])
    return Guarded(harness, settings)


@pytest.mark.parametrize(
    "peer",
    [
        INSIDE,
        IPv4Address("TCP", "127.0.0.1", 1),
        IPv6Address("TCP", "2001:db8:1:2::5", 1),
        # An IPv4 client of a dual-stack (tcp6:) listener.
        IPv6Address("TCP", "::ffff:10.9.8.7", 1),
        # No address to check: the socket file's permissions let it in.
        UNIXAddress(b"/run/mirrorproxy.sock"),
    ],
)
def test_clients_in_allowed_networks_are_served(networks, peer):
    response = networks.get(f"/v2/{REPO}/manifests/latest", peer=peer)
    assert (response.status, response.body) == (200, MANIFEST)


@pytest.mark.parametrize(
    "peer",
    [
        OUTSIDE,
        IPv4Address("TCP", "127.0.0.2", 1),
        IPv6Address("TCP", "2001:db8:2::1", 1),
        IPv6Address("TCP", "::ffff:192.0.2.7", 1),
        IPv6Address("TCP", "::1", 1),
    ],
)
def test_clients_elsewhere_get_403_denied_and_reach_nothing(networks, peer):
    response = networks.get(f"/v2/{REPO}/manifests/latest", peer=peer, x_forwarded_for="10.0.0.1")

    assert response.status == 403
    assert error_code(response) == "DENIED"
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    assert "www-authenticate" not in response.headers
    assert networks.harness.registry.seen == []


def test_networks_are_checked_before_passwords(harness, htpasswd):
    settings = AccessSettings.from_options(str(htpasswd), ["10.0.0.0/8"])
    guarded = Guarded(harness, settings)

    outside = guarded.get("/v2/", peer=OUTSIDE, authorization=basic(*ALICE))
    inside_anonymous = guarded.get("/v2/", peer=INSIDE)
    inside = guarded.get("/v2/", peer=INSIDE, authorization=basic(*ALICE))

    assert (outside.status, error_code(outside)) == (403, "DENIED")
    assert (inside_anonymous.status, error_code(inside_anonymous)) == (401, "UNAUTHORIZED")
    assert inside.status == 200
    assert guarded.site.resource._passwords.bcrypt_checks == 1


def test_nothing_configured_means_no_guard(harness):
    root = harness.site.resource
    assert guard(root, AccessSettings.from_options(None, []), run_inline, harness.clock) is root


# -- the command line -----------------------------------------------------------------


def test_options_take_htpasswd_and_repeated_allow(htpasswd):
    options = Options()
    options.parseOptions(
        ["--htpasswd", str(htpasswd), "--allow", "10.0.0.0/8", "--allow", "fd00::/8"]
    )
    access = options["access"]
    assert access.htpasswd == str(htpasswd)
    assert [str(n) for n in access.networks] == ["10.0.0.0/8", "fd00::/8"]


@pytest.mark.parametrize(
    "cidr, message",
    [("10.0.0.1/8", "has host bits set"), ("10.0.0.0/33", "10.0.0.0/33"), ("intranet", "intranet")],
)
def test_a_bad_network_is_a_usage_error(cidr, message):
    with pytest.raises(usage.UsageError, match=message):
        Options().parseOptions(["--allow", cidr])
