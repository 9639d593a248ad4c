"""The names of what a node keeps in Redis: under the prefix and the
registry, readable, and never the same for two different things."""

from __future__ import annotations

import itertools
from fnmatch import fnmatchcase

from mirrorproxy.cluster.keys import KeySpace
from mirrorproxy.registry.names import Digest

DIGEST = Digest("ab" * 32)


def test_keys_read_as_prefix_registry_kind_and_what() -> None:
    keys = KeySpace("mirrorproxy")
    assert keys.fill_claim("docker.io", DIGEST) == f"mirrorproxy:docker.io:fill:sha256:{'ab' * 32}"
    assert keys.tag_record("docker.io", "library/alpine", "3.20", None) == (
        "mirrorproxy:docker.io:tag:library/alpine:3.20"
    )
    assert keys.tag_record("docker.io", "library/alpine", "3.20", "0123456789abcdef") == (
        "mirrorproxy:docker.io:tag:library/alpine:3.20:0123456789abcdef"
    )
    assert keys.tag_revalidation("docker.io", "library/alpine", "3.20", None) == (
        "mirrorproxy:docker.io:revalidating:library/alpine:3.20"
    )
    assert keys.events_channel() == "mirrorproxy:events"
    assert KeySpace().events_channel() == "mirrorproxy:events"


def test_a_colon_in_the_prefix_or_registry_cannot_make_two_names_meet() -> None:
    keys = [
        KeySpace("a").fill_claim("b:fill", DIGEST),
        KeySpace("a:b").fill_claim("fill", DIGEST),
        KeySpace("a").fill_claim("b", DIGEST),
        KeySpace("a").tag_record("registry.local:5000", "r", "t", None),
        KeySpace("a").tag_record("registry.local", "5000:tag:r", "t", None),
    ]
    assert len(set(keys)) == len(keys)
    assert keys[3] == "a:registry.local%3A5000:tag:r:t"


def test_tags_variants_and_locks_of_different_tags_never_share_a_key() -> None:
    keys = KeySpace()
    names = set()
    combos = list(itertools.product(["r", "r/t"], ["t", "t2"], [None, "v", "t2"]))
    for repository, tag, variant in combos:
        names.add(keys.tag_record("reg", repository, tag, variant))
        names.add(keys.tag_revalidation("reg", repository, tag, variant))
    assert len(names) == 2 * len(combos)


def test_a_purges_patterns_match_the_tag_records_it_removes_and_no_others():
    keys = KeySpace("mirrorproxy/bucket/cache/")
    records = {
        (repository, tag, variant): keys.tag_record("docker.io", repository, tag, variant)
        for repository in ("library/alpine", "library/alpine/sub", "library/alpine2")
        for tag in ("1", "10")
        for variant in (None, "application/vnd.oci.image.manifest.v1+json")
    }

    def matched(patterns: list[str]) -> set[tuple[str, str, str | None]]:
        return {which for which, key in records.items() if any(fnmatchcase(key, p) for p in patterns)}

    assert matched(keys.tag_record_patterns("docker.io", "library/alpine", None)) == {
        which for which in records if which[0] == "library/alpine"
    }
    assert matched(keys.tag_record_patterns("docker.io", "library/alpine", "1")) == {
        ("library/alpine", "1", None),
        ("library/alpine", "1", "application/vnd.oci.image.manifest.v1+json"),
    }
    assert matched(keys.tag_record_patterns("ghcr.io", "library/alpine", None)) == set()
