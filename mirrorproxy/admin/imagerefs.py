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

    def __str__(self) -> str:
        if isinstance(self.reference, Digest):
            return f"{self.repository}@{self.reference}"
        if self.reference is None:
            return self.repository
        return f"{self.repository}:{self.reference}"


def parse_image(text: str, default_tag: str | None = DEFAULT_TAG, allow_digest: bool = True) -> ImageName:
    """Parse ``[docker.io/]NAME[:TAG][@DIGEST]``; no tag means `default_tag`.

    A one-component name stays as typed: the mirror applies its upstream's
    rule (Docker Hub's ``library/``), as it does for every client.
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
    first = name.split("/", 1)[0]
    # Docker's rule for telling a registry host from a name component.
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        raise BadImageName(
            f"{text!r} names the registry {first!r}; the admin command works on "
            "the registry the mirror mirrors: leave the host out"
        )
    if at and not allow_digest:
        raise BadImageName(f"{text!r}: a digest is not allowed here, only NAME[:TAG]")
    try:
        repository = parse_name(name)
        if at:
            return ImageName(repository, Digest.parse(digest_text))
        return ImageName(repository, parse_tag(tag) if tag is not None else default_tag)
    except (NameInvalid, TagInvalid, DigestInvalid, DigestUnsupported) as e:
        raise BadImageName(f"{text!r}: {e}") from None
