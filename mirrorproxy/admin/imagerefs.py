"""Image references as people type them: ``alpine``, ``org/img:1.2``, ``docker.io/x@sha256:...``.

`registry.names` owns the grammar of what reaches the mirror's paths; this module
owns the forms an operator types on the admin command's line, and turns them
into a repository and a tag or digest, or a message saying what is wrong.
"""

from __future__ import annotations

from attrs import frozen

from ..registry.names import (
    Digest,
    DigestInvalid,
    DigestUnsupported,
    NameInvalid,
    TagInvalid,
    parse_name,
    parse_tag,
)
from ..upstream.settings import looks_like_registry, parse_namespace

DEFAULT_TAG = "latest"
# Docker Hub's own names; to its clients, a mirror is Docker Hub.
_DOCKER_HUB_PREFIXES = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")


class BadImageName(ValueError):
    """An image reference the admin command cannot use, with why."""


@frozen
class ImageName:
    repository: str
    # A tag, a digest, or None: every tag (only where the caller allows it).
    reference: str | Digest | None
    # The registry named before the repository (ghcr.io/...); None: the
    # mirror's default, Docker Hub's names included.
    registry: str | None = None

    @property
    def path_name(self) -> str:
        """The repository as the mirror's API paths name it: the registry
        first when there is one (``/v2/ghcr.io/owner/app/...``)."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    def __str__(self) -> str:
        if isinstance(self.reference, Digest):
            return f"{self.path_name}@{self.reference}"
        if self.reference is None:
            return self.path_name
        return f"{self.path_name}:{self.reference}"


def parse_image(text: str, default_tag: str | None = DEFAULT_TAG, allow_digest: bool = True) -> ImageName:
    """Parse ``[REGISTRY/]NAME[:TAG][@DIGEST]``; no tag means `default_tag`.

    Docker Hub's own names for itself are dropped (the mirror's default is
    Docker Hub to its clients); another registry is kept.  A one-component
    name stays as typed: the mirror applies its registry's rule (Docker
    Hub's ``library/``), as it does for every client.
    """
    rest = text.strip()
    for prefix in _DOCKER_HUB_PREFIXES:
        if rest.startswith(prefix):
            rest = rest[len(prefix) :]
            break
    name, at, digest_text = rest.partition("@")
    tag: str | None = None
    if ":" in name[name.rfind("/") + 1 :]:
        name, _, tag = name.rpartition(":")
    first, _, rest_of_name = name.partition("/")
    registry = None
    # Docker's rule for telling a registry host from a name component.
    if rest_of_name and looks_like_registry(first):
        try:
            registry = parse_namespace(first)
        except ValueError:
            raise BadImageName(f"{text!r}: {first!r} is not a registry name") from None
        name = rest_of_name
    if at and not allow_digest:
        raise BadImageName(f"{text!r}: a digest is not allowed here, only NAME[:TAG]")
    try:
        repository = parse_name(name)
        if at:
            return ImageName(repository, Digest.parse(digest_text), registry)
        return ImageName(repository, parse_tag(tag) if tag is not None else default_tag, registry)
    except (NameInvalid, TagInvalid, DigestInvalid, DigestUnsupported) as e:
        raise BadImageName(f"{text!r}: {e}") from None
