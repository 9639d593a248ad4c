"""Warming the cache: pulling images through a running mirror, as a client would.

For each image: its manifest by tag (or digest), for an index the manifests of
every platform (or the ``--platform`` ones; never the ``unknown/unknown``
attestation entries), then every config and layer, a few at a time.  These
are the requests docker and containerd make, so the mirror treats them as any
pull: they fill the cache once and coalesce with real clients pulling the same
blobs at the same moment.  A blob shared by several images is pulled once.

A single-platform image names its platform in its config, so when platforms
are named that config is pulled first, to learn whether the image is wanted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Protocol

from attrs import define, field, frozen

from ..registry.descriptors import (
    MAX_MANIFEST_SIZE,
    Descriptor,
    ManifestUnreadable,
    Platform,
    references,
)
from ..registry.names import Digest
from .imagerefs import DEFAULT_TAG, ImageName
from .pullclient import BlobReceived, Manifest, MirrorClient, PullFailed

DEFAULT_JOBS = 4
# An index of indexes is legal; deeper than this is a loop or an attack.
_MAX_DEPTH = 4
# An image config is a JSON document like a manifest, and as small.
_MAX_CONFIG_SIZE = MAX_MANIFEST_SIZE


@frozen
class ImagePlan:
    """What pulling one image takes: its manifests, and the blobs they name."""

    image: ImageName
    digest: Digest
    manifests: tuple[Manifest, ...]
    blobs: tuple[Descriptor, ...]
    platforms: tuple[Platform, ...]
    # Blobs pulled already, to learn the platform of a single-platform image.
    fetched: dict[Digest, BlobReceived] = field(factory=dict)

    @property
    def size(self) -> int:
        return sum(max(b.size, 0) for b in self.blobs)


@frozen
class ImageResult:
    image: ImageName
    digest: Digest | None
    blobs: int = 0
    bytes: int = 0
    # The mirror's X-Cache answers for this image's blobs: HIT, MISS, JOIN.
    outcomes: dict[str, int] = field(factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class PrefetchObserver(Protocol):
    """What a prefetch reports as it goes (the CLI draws a bar or logs lines)."""

    def warned(self, text: str) -> None: ...

    def resolved(self, plan: ImagePlan) -> None: ...

    def started(self, total_bytes: int) -> None: ...

    def received(self, count: int) -> None: ...

    def finished(self, result: ImageResult) -> None: ...


def prefetch(
    client: MirrorClient,
    images: Sequence[ImageName],
    observer: PrefetchObserver,
    platforms: Sequence[Platform] = (),
    jobs: int = DEFAULT_JOBS,
) -> list[ImageResult]:
    """Pull `images`; one result each, in order.  Raises MirrorUnreachable
    (before pulling anything) if the mirror does not answer.

    With `platforms`, an image lacking some of them is a warning; one
    lacking them all fails: nothing of it is pulled."""
    client.check()
    results: dict[ImageName, ImageResult] = {}
    plans: list[ImagePlan] = []
    for image in images:
        try:
            plan = resolve(client, image, platforms, observer.warned)
        except PullFailed as e:
            results[image] = ImageResult(image, None, error=str(e))
            observer.finished(results[image])
            continue
        plans.append(plan)
        observer.resolved(plan)
    for result in _pull_blobs(client, plans, observer, jobs):
        results[result.image] = result
    return [results[image] for image in images]


def resolve(
    client: MirrorClient,
    image: ImageName,
    platforms: Sequence[Platform],
    warn: Callable[[str], None] = lambda text: None,
) -> ImagePlan:
    """Fetch the image's manifests; raise PullFailed if it cannot be pulled."""
    reference = image.reference if image.reference is not None else DEFAULT_TAG
    top = client.manifest(image.path_name, reference)
    walk = _Walk(client, image, tuple(platforms), warn)
    walk.manifest(top, 0)
    unique = tuple({b.digest: b for b in walk.blobs}.values())
    return ImagePlan(image, top.digest, tuple(walk.manifests), unique, tuple(walk.chosen), walk.fetched)


@define(eq=False)
class _Walk:
    """One image's manifests followed down to the blobs a pull takes."""

    _client: MirrorClient
    _image: ImageName
    _platforms: tuple[Platform, ...]
    _warn: Callable[[str], None]
    manifests: list[Manifest] = field(factory=list)
    blobs: list[Descriptor] = field(factory=list)
    chosen: list[Platform] = field(factory=list)
    fetched: dict[Digest, BlobReceived] = field(factory=dict)

    def manifest(self, manifest: Manifest, depth: int) -> None:
        self.manifests.append(manifest)
        try:
            found = references(manifest.body, manifest.media_type)
        except ManifestUnreadable as e:
            raise PullFailed(f"manifest {manifest.digest}: {e}") from None
        if found.is_index:
            if depth >= _MAX_DEPTH:
                raise PullFailed(f"indexes nested deeper than {_MAX_DEPTH}")
            for child in self._children(found.manifests):
                if child.platform is not None:
                    self.chosen.append(child.platform)
                self.manifest(self._client.manifest(self._image.path_name, child.digest), depth + 1)
            return
        if depth == 0 and self._platforms:
            self._check_platform(found.blobs)
        self.blobs.extend(found.blobs)

    def _children(self, entries: tuple[Descriptor, ...]) -> list[Descriptor]:
        """The entries of an index a pull takes: images, not attestations;
        only the wanted platforms if any are named."""
        runnable = [
            e for e in entries if not e.attestation and not (e.platform is not None and e.platform.is_unknown)
        ]
        if not self._platforms:
            return runnable
        has = [e.platform for e in runnable if e.platform is not None]
        self._compare(has)
        return [e for e in runnable if e.platform is not None and self._wanted(e.platform)]

    def _check_platform(self, blobs: tuple[Descriptor, ...]) -> None:
        """A single-platform image names its platform in its config: read it."""
        config = blobs[0] if blobs else None
        if config is None or not 0 <= config.size <= _MAX_CONFIG_SIZE:
            self._cannot_tell("no config to read it in")
            return
        repository = self._image.path_name
        received = self._client.blob(repository, config.digest, config.size, keep=_MAX_CONFIG_SIZE)
        self.fetched[config.digest] = received
        platform = _config_platform(received.body)
        if isinstance(platform, str):
            self._cannot_tell(platform)
            return
        self._compare([platform])
        self.chosen.append(platform)

    def _cannot_tell(self, why: str) -> None:
        self._warn(f"{self._image}: cannot tell its platform ({why}); pulled it all the same")

    def _compare(self, has: list[Platform]) -> None:
        """Warn of the named platforms the image lacks; fail if it has none of them."""
        missing = [p for p in self._platforms if not any(h.matches(p) for h in has)]
        if not missing:
            return
        has_text = ", ".join(str(h) for h in has) or "none"
        self._warn(f"{self._image} has no {', '.join(str(p) for p in missing)} (it has: {has_text})")
        if len(missing) == len(self._platforms):
            raise PullFailed(f"nothing to pull for {', '.join(str(p) for p in self._platforms)}")

    def _wanted(self, platform: Platform) -> bool:
        return any(platform.matches(p) for p in self._platforms)


def _config_platform(body: bytes | None) -> Platform | str:
    """The platform an image config names, or why it names none."""
    if body is None:
        return "its config is too large to read"
    try:
        document = json.loads(body)
    except ValueError:
        return "its config is not JSON"
    platform = Platform.from_json(document)
    return platform if platform is not None else "its config names no os and architecture"


# -- blobs ----------------------------------------------------------------------


def _pull_blobs(
    client: MirrorClient, plans: list[ImagePlan], observer: PrefetchObserver, jobs: int
) -> list[ImageResult]:
    # A blob shared by several images is pulled once, through the first
    # image's repository (the mirror caches it for every repository).
    outcomes: dict[Digest, BlobReceived | str] = {}
    for plan in plans:
        outcomes.update(plan.fetched)
    first: dict[Digest, tuple[str, Descriptor]] = {}
    for plan in plans:
        for blob in plan.blobs:
            if blob.digest not in outcomes:
                first.setdefault(blob.digest, (plan.image.path_name, blob))
    observer.started(sum(max(d.size, 0) for _, d in first.values()))
    waiting = {id(plan): {b.digest for b in plan.blobs if b.digest in first} for plan in plans}
    results = []
    # Images with nothing to pull are done already.
    for plan in plans:
        if not waiting[id(plan)]:
            results.append(_result(plan, outcomes))
            observer.finished(results[-1])
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="prefetch") as pool:
        futures: dict[Future[BlobReceived], Digest] = {
            pool.submit(client.blob, repository, blob.digest, blob.size, observer.received): digest
            for digest, (repository, blob) in first.items()
        }
        for future in as_completed(futures):
            digest = futures[future]
            try:
                outcomes[digest] = future.result()
            except PullFailed as e:
                outcomes[digest] = str(e)
            for plan in plans:
                pending = waiting[id(plan)]
                if digest in pending:
                    pending.discard(digest)
                    if not pending:
                        results.append(_result(plan, outcomes))
                        observer.finished(results[-1])
    return results


def _result(plan: ImagePlan, outcomes: dict[Digest, BlobReceived | str]) -> ImageResult:
    errors = [o for b in plan.blobs if isinstance(o := outcomes[b.digest], str)]
    received = [o for b in plan.blobs if isinstance(o := outcomes[b.digest], BlobReceived)]
    counts = dict(sorted(Counter(r.outcome for r in received).items()))
    error = None
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        error = errors[0] + more
    return ImageResult(plan.image, plan.digest, len(received), sum(r.size for r in received), counts, error)
