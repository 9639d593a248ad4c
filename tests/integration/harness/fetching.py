"""Fetching from the mirror as a client would, hashing the body as it comes:
what each client received, to compare with what upstream holds."""

from __future__ import annotations

import hashlib
import threading

from attrs import frozen

from .mirror import Mirror

FETCH_TIMEOUT = 60.0


@frozen
class Received:
    status: int
    length: int
    digest: str


def fetch(mirror: Mirror, path: str, start: threading.Barrier | None = None) -> Received:
    """GET ``path`` from the mirror, hashing the body as it arrives."""
    connection = mirror.connection(FETCH_TIMEOUT)
    try:
        connection.connect()
        if start is not None:
            # Connected; now all clients send their requests together.
            start.wait(FETCH_TIMEOUT)
        connection.request("GET", path)
        response = connection.getresponse()
        hasher, length = hashlib.sha256(), 0
        while chunk := response.read(256 * 1024):
            hasher.update(chunk)
            length += len(chunk)
        return Received(response.status, length, "sha256:" + hasher.hexdigest())
    finally:
        connection.close()
