"""A peer node's GET of a blob (``X-Mirrorproxy-Peer``): served from what this
node holds or is fetching, never fetched on the peer's behalf."""

from __future__ import annotations

from ..fakeregistry import sha256
from .harness import blob_path, held_blob, upstream_blob

PEER = {"X-Mirrorproxy-Peer": "node-b"}


def test_a_blob_neither_held_nor_fetching_is_404_and_nothing_goes_upstream(harness):
    data, digest = upstream_blob(harness, 10_000)

    response = harness.request("GET", blob_path(digest), PEER)

    assert response.status == 404
    assert response.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert harness.registry.count("GET", "/blobs/") == 0
    # An ordinary client still gets it.
    assert harness.get(blob_path(digest)).body == data


def test_a_held_blob_is_served_to_a_peer(harness):
    data, digest = upstream_blob(harness, 300_000)
    harness.get(blob_path(digest))

    response = harness.request("GET", blob_path(digest), PEER)

    assert (response.status, response.body, response.headers["x-cache"]) == (200, data, "HIT")
    assert harness.registry.count("GET", "/blobs/") == 1


def test_a_peer_follows_a_running_fill_and_gets_its_last_byte_once_verified(harness):
    data, digest = held_blob(harness, 500_000)
    client = harness.send("GET", blob_path(digest))
    harness.pump()
    held = harness.registry.held[digest]
    held.send(200_000)
    harness.pump()

    peer = harness.send("GET", blob_path(digest), PEER)
    harness.pump()

    assert peer.response().headers["x-cache"] == "JOIN"
    assert peer.response().body == data[:200_000] and not peer.response().complete
    held.finish()
    harness.pump()
    assert peer.response().body == data and peer.response().complete
    assert client.response().body == data
    assert harness.registry.count("GET", "/blobs/") == 1


def test_a_peer_asking_for_an_unknown_digest_gets_404_without_upstream(harness):
    response = harness.request("GET", blob_path(sha256(b"nowhere")), PEER)

    assert response.status == 404
    assert harness.registry.count("GET", "/blobs/") == 0
