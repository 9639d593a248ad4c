"""Who this node is, and the names of everything it keeps in Redis.

Every key starts with a configurable prefix (several clusters, or other
programs, may share one Redis) and the registry's namespace (the
upstream's cache key), so two upstreams' digests and tags never meet.
Each part is percent-quoted where it could hold the ``:`` that separates
them (a registry named by host:port), so no two names can collide.
"""

from __future__ import annotations

from urllib.parse import quote

from attrs import frozen

from ..registry.names import Digest

DEFAULT_PREFIX = "mirrorproxy"


@frozen
class Node:
    """This node: an id unique in the cluster, and the URL other nodes
    reach it on (to follow a fill it runs)."""

    id: str
    url: str


def _part(text: str) -> str:
    return quote(text, safe="/._-@+")


@frozen
class KeySpace:
    prefix: str = DEFAULT_PREFIX

    def fill_claim(self, registry: str, digest: Digest) -> str:
        return f"{_part(self.prefix)}:{_part(registry)}:fill:{digest}"

    def tag_record(self, registry: str, repository: str, tag: str, variant: str | None) -> str:
        return f"{_part(self.prefix)}:{_part(registry)}:tag:{self._tag(repository, tag, variant)}"

    def tag_revalidation(
        self, registry: str, repository: str, tag: str, variant: str | None
    ) -> str:
        return (
            f"{_part(self.prefix)}:{_part(registry)}:revalidating:"
            f"{self._tag(repository, tag, variant)}"
        )

    def tag_record_patterns(self, registry: str, repository: str, tag: str | None) -> list[str]:
        """SCAN patterns of a repository's tag records (or one tag's and its
        variants'), for a purge.  Names hold no glob characters (quoted)."""
        base = f"{_part(self.prefix)}:{_part(registry)}:tag:{_part(repository)}:"
        if tag is None:
            return [base + "*"]
        return [base + _part(tag), base + _part(tag) + ":*"]

    def events_channel(self) -> str:
        """One channel for the whole cluster, whatever the registry."""
        return f"{_part(self.prefix)}:events"

    @staticmethod
    def _tag(repository: str, tag: str, variant: str | None) -> str:
        # A variant is a set of media types; quoted, it cannot hold the ":"
        # that would make it look like another tag's.
        suffix = "" if variant is None else ":" + quote(variant, safe="")
        return f"{_part(repository)}:{_part(tag)}{suffix}"
