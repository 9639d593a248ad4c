"""Warming the cache: pulling images through a running mirror, as a client would.

For each image: its manifest by tag (or digest), for an index the manifests of
every platform (or the ``--platform`` ones; never the ``unknown/unknown``
attestation entries), then every config and layer, a few at a time.  These are
the requests docker and containerd make, so the mirror treats them as any
pull: they fill the cache once and coalesce with real clients pulling the same
blobs at the same moment.  A blob shared by several images is pulled once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Protocol

from attrs import field, frozen

from .descriptors import Descriptor, ManifestUnreadable, Platform, references
from .imagenames import DEFAULT_TAG, ImageName
from .names import Digest
from .pullclient import BlobReceived, Manifest, MirrorClient, PullFailed

DEFAULT_JOBS = 4
# An index of indexes is legal; deeper than this is a loop or an attack.
_MAX_DEPTH = 4


@frozen
class ImagePlan:
    """What pulling one image takes: its manifests, and the blobs they name."""

    image: ImageName
    digest: Digest
    manifests: tuple[Manifest, ...]
    blobs: tuple[Descriptor, ...]
    platforms: tuple[Platform, ...]

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
    (before pulling anything) if the mirror does not answer."""
    client.check()
    results: dict[ImageName, ImageResult] = {}
    plans: list[ImagePlan] = []
    for image in images:
        try:
            plan = resolve(client, image, platforms)
        except PullFailed as e:
            results[image] = ImageResult(image, None, error=str(e))
            observer.finished(results[image])
            continue
        plans.append(plan)
        observer.resolved(plan)
    for result in _pull_blobs(client, plans, observer, jobs):
        results[result.image] = result
    return [results[image] for image in images]


def resolve(client: MirrorClient, image: ImageName, platforms: Sequence[Platform]) -> ImagePlan:
    """Fetch the image's manifests; raise PullFailed if it cannot be pulled."""
    reference = image.reference if image.reference is not None else DEFAULT_TAG
    top = client.manifest(image.repository, reference)
    manifests: list[Manifest] = []
    blobs: list[Descriptor] = []
    chosen: list[Platform] = []
    _walk(client, image, top, platforms, 0, manifests, blobs, chosen)
    unique = tuple({b.digest: b for b in blobs}.values())
    return ImagePlan(image, top.digest, tuple(manifests), unique, tuple(chosen))


def _walk(
    client: MirrorClient,
    image: ImageName,
    manifest: Manifest,
    platforms: Sequence[Platform],
    depth: int,
    manifests: list[Manifest],
    blobs: list[Descriptor],
    chosen: list[Platform],
) -> None:
    manifests.append(manifest)
    try:
        found = references(manifest.body, manifest.media_type)
    except ManifestUnreadable as e:
        raise PullFailed(f"{image}: manifest {manifest.digest}: {e}") from None
    if not found.is_index:
        blobs.extend(found.blobs)
        return
    if depth >= _MAX_DEPTH:
        raise PullFailed(f"{image}: indexes nested deeper than {_MAX_DEPTH}")
    for child in _children(image, found.manifests, platforms):
        if child.platform is not None:
            chosen.append(child.platform)
        fetched = client.manifest(image.repository, child.digest)
        _walk(client, image, fetched, platforms, depth + 1, manifests, blobs, chosen)


def _children(
    image: ImageName, entries: tuple[Descriptor, ...], platforms: Sequence[Platform]
) -> list[Descriptor]:
    """The entries of an index a pull takes: images, not attestations;
    only the wanted platforms if any are named."""
    runnable = [
        e for e in entries if not e.attestation and not (e.platform is not None and e.platform.is_unknown)
    ]
    if not platforms:
        return runnable
    wanted = [
        e for e in runnable if e.platform is not None and any(e.platform.matches(p) for p in platforms)
    ]
    if not wanted:
        has = ", ".join(str(e.platform) for e in runnable if e.platform is not None) or "none"
        named = ", ".join(str(p) for p in platforms)
        raise PullFailed(f"{image}: no manifest for {named} (it has: {has})")
    return wanted


# -- blobs ----------------------------------------------------------------------


def _pull_blobs(
    client: MirrorClient, plans: list[ImagePlan], observer: PrefetchObserver, jobs: int
) -> list[ImageResult]:
    # A blob shared by several images is pulled once, through the first
    # image's repository (the mirror caches it for every repository).
    first: dict[Digest, tuple[str, Descriptor]] = {}
    for plan in plans:
        for blob in plan.blobs:
            first.setdefault(blob.digest, (plan.image.repository, blob))
    observer.started(sum(max(d.size, 0) for _, d in first.values()))
    waiting = {id(plan): {b.digest for b in plan.blobs} for plan in plans}
    outcomes: dict[Digest, BlobReceived | str] = {}
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
