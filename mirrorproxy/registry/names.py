"""The grammar of repository names, tags and digests (OCI distribution spec).

Everything a client puts in a path is checked here before it reaches the
cache or upstream, and nothing that passes can name a path outside the cache:
name components start with a letter or digit, so ``..`` or ``_tags`` never
match, and ``%`` (percent-encoding) is not in any alphabet.
"""

from __future__ import annotations

import re

from attrs import frozen

# distribution/reference: path-component = alnum (separator alnum)*
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# The spec's general digest grammar; only sha256 is supported.
_ANY_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_SHA256_HEX = re.compile(r"[a-f0-9]{64}")

MAX_NAME_LENGTH = 255


class NameInvalid(ValueError):
    """A repository name outside the grammar."""


class TagInvalid(ValueError):
    """A manifest reference that is neither a tag nor a digest."""


class DigestInvalid(ValueError):
    """A digest outside the grammar, or of the wrong form for its algorithm."""


class DigestUnsupported(ValueError):
    """A well-formed digest of an algorithm other than sha256."""


@frozen
class Digest:
    """A sha256 content digest: the only algorithm a mirror needs."""

    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        if not _ANY_DIGEST.fullmatch(text):
            raise DigestInvalid(f"invalid digest {text!r}")
        algorithm, _, encoded = text.partition(":")
        if algorithm != "sha256":
            raise DigestUnsupported(
                f"digest algorithm {algorithm!r} is not supported (only sha256)"
            )
        if not _SHA256_HEX.fullmatch(encoded):
            raise DigestInvalid(f"invalid sha256 digest {text!r}")
        return cls(encoded)

    def __str__(self) -> str:
        return f"sha256:{self.hex}"


def looks_like_digest(reference: str) -> bool:
    """Whether a manifest reference is meant as a digest (tags have no ':')."""
    return ":" in reference


def parse_name(text: str) -> str:
    if len(text) > MAX_NAME_LENGTH or not _NAME.fullmatch(text):
        raise NameInvalid(f"invalid repository name {text!r}")
    return text


def parse_tag(text: str) -> str:
    if not _TAG.fullmatch(text):
        raise TagInvalid(f"invalid tag {text!r}")
    return text


def is_tag(text: str) -> bool:
    return _TAG.fullmatch(text) is not None


def parse_reference(text: str) -> str | Digest:
    """A manifest reference: a Digest, or a tag as a string."""
    if looks_like_digest(text):
        return Digest.parse(text)
    return parse_tag(text)


def docker_hub_name(name: str) -> str:
    """Docker Hub's rule: a one-component name is an official image."""
    return name if "/" in name else f"library/{name}"
