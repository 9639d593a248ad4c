"""The storage contract (tests/storagecontract.py) over the filesystem store,
its I/O run inline.

Stores over a server (S3) run the same tests as integration tests
(tests/integration/test_s3_store.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.internet.defer import maybeDeferred

from mirrorproxy.registry.names import Digest
from mirrorproxy.storage.filesystem import FilesystemStore
from mirrorproxy.storage.layout import Layout

from ..storagecontract import *  # noqa: F403 - the contract's tests and fixtures
from ..storagecontract import Implementation
from .cachebuilder import run as run_inline


def _files_under(store: FilesystemStore) -> set[str]:
    return {
        os.path.relpath(os.path.join(directory, name), store.root)
        for directory, _, names in os.walk(store.root)
        for name in names
    }


def _block_registry(store: FilesystemStore, registry: str) -> Callable[[], None]:
    # A file where the registry's directory would be: nothing can go under it.
    blocker = Path(store.root, registry)
    blocker.write_bytes(b"in the way")
    return blocker.unlink


def _age(store: FilesystemStore, registry: str, digest: Digest, seconds: float) -> None:
    path = store.blob_path(registry, digest)
    info = os.stat(path)
    os.utime(path, (info.st_atime - seconds, info.st_mtime - seconds))


FILESYSTEM = Implementation(
    "filesystem",
    make=lambda place: FilesystemStore(str(place / "cache"), maybeDeferred),
    reopen=lambda store: FilesystemStore(store.root, maybeDeferred),
    held=_files_under,
    break_commits=_block_registry,
    age=_age,
    removed_behind_its_back=lambda store: Layout(store.root).stamp_changed(),
    run=run_inline,
)

IMPLEMENTATIONS = [FILESYSTEM]


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda i: i.name)
def implementation(request: pytest.FixtureRequest) -> Implementation:
    return request.param  # type: ignore[no-any-return]
