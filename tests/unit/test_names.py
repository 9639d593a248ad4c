"""Repository names, tags and digests: what the mirror lets through to its cache.

Everything a client puts in a path goes through `names` before it reaches the
filesystem or upstream, so the properties here are what keeps a request from
naming a file outside the cache.
"""

from __future__ import annotations

import hashlib
import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mirrorproxy.registry.names import (
    MAX_NAME_LENGTH,
    Digest,
    DigestInvalid,
    DigestUnsupported,
    NameInvalid,
    TagInvalid,
    docker_hub_name,
    looks_like_digest,
    parse_name,
    parse_reference,
    parse_tag,
)

HEX = hashlib.sha256(b"hello").hexdigest()

# Characters a hostile or confused client might put in a path, plus the
# legal ones, so generated strings hit both sides of the grammar often.
_HOSTILE = "./_-%\\\x00:@ \t\n~?#"
_ALPHABET = "ab09" + "AZ" + _HOSTILE


# -- repository names ---------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "alpine",
        "library/alpine",
        "bitnami/redis",
        "a/b/c/d",
        "my-org/my_image",
        "a__b",
        "a---b",
        "foo.bar/baz",
        "0",
        "a" * MAX_NAME_LENGTH,
    ],
)
def test_valid_names_are_accepted_unchanged(name):
    assert parse_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Alpine",  # upper case
        "..",
        "../etc",
        "library/../../etc",
        "a/./b",
        "a..b",
        "/alpine",
        "alpine/",
        "a//b",
        "_tags",
        "a/_tags",
        ".hidden",
        "-dash",
        "a_",
        "a-",
        "a___b",  # three underscores: not a separator
        "a%2fb",
        "a%2e%2e",
        "a\\b",
        "a\x00b",
        "a b",
        "a:b",
        "a@b",
        "a" * (MAX_NAME_LENGTH + 1),
    ],
)
def test_invalid_names_are_refused(name):
    with pytest.raises(NameInvalid):
        parse_name(name)


def _assert_safe_name(name: str) -> None:
    assert ".." not in name
    assert not name.startswith(("/", "_", ".", "-"))
    assert not name.endswith("/")
    assert "//" not in name
    for forbidden in ("%", "\\", "\x00", ":", "@", " "):
        assert forbidden not in name
    for component in name.split("/"):
        assert component not in ("", ".", "..")
        assert component[0].isalnum() and component[-1].isalnum()
    assert len(name) <= MAX_NAME_LENGTH


@given(st.text(alphabet=_ALPHABET, max_size=40))
@example("../x")
@example("a/../b")
@example("a/_tags")
@example("%2e%2e")
def test_nothing_accepted_as_a_name_can_climb_or_hide(text):
    """Whatever parse_name accepts is a plain relative path of safe components."""
    try:
        name = parse_name(text)
    except NameInvalid:
        return
    assert name == text
    _assert_safe_name(name)


@given(st.from_regex(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*){0,3}", fullmatch=True))
def test_every_name_in_the_grammar_is_accepted_and_safe(text):
    if len(text) > MAX_NAME_LENGTH:
        return
    assert parse_name(text) == text
    _assert_safe_name(text)


# -- tags -------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["latest", "3.19", "v1.2.3-rc1", "_private", "A" * 128, "1..2"])
def test_valid_tags_are_accepted_unchanged(tag):
    # `_private` and `1..2` are legal per the distribution spec's tag grammar
    # ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}); as one path component they are harmless.
    assert parse_tag(tag) == tag


@pytest.mark.parametrize(
    "tag",
    ["", ".", "..", ".hidden", "-x", "a/b", "../x", "%2e%2e", "a%2fb", "a\\b", "a\x00", "a:b", "a b", "A" * 129],
)
def test_invalid_tags_are_refused(tag):
    with pytest.raises(TagInvalid):
        parse_tag(tag)


@given(st.text(alphabet=_ALPHABET, max_size=140))
@example("..")
@example(".")
@example("..%2f")
def test_nothing_accepted_as_a_tag_can_leave_its_directory(text):
    """An accepted tag is one ordinary file name: never `.`/`..`, no separators or escapes."""
    try:
        tag = parse_tag(text)
    except TagInvalid:
        return
    assert tag == text
    assert tag not in (".", "..")
    assert not tag.startswith((".", "-"))
    for forbidden in ("/", "%", "\\", "\x00", ":", "@", " ", "\n"):
        assert forbidden not in tag
    assert 1 <= len(tag) <= 128


# -- digests ----------------------------------------------------------------


def test_sha256_digest_round_trips():
    digest = Digest.parse(f"sha256:{HEX}")
    assert digest.hex == HEX
    assert str(digest) == f"sha256:{HEX}"
    assert Digest.parse(str(digest)) == digest


@pytest.mark.parametrize(
    "text",
    [
        "sha512:" + hashlib.sha512(b"x").hexdigest(),
        "sha384:" + hashlib.sha384(b"x").hexdigest(),
        "blake3:" + "a" * 64,
        "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564",
    ],
)
def test_other_algorithms_are_unsupported_not_invalid(text):
    with pytest.raises(DigestUnsupported):
        Digest.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sha256",
        "sha256:",
        ":" + HEX,
        f"sha256:{HEX[:-1]}",  # 63 hex digits
        f"sha256:{HEX}0",  # 65
        f"sha256:{HEX.upper()}",
        f"SHA256:{HEX}",
        f"sha256:{HEX[:-1]}g",
        "sha256:../../etc/passwd",
        "sha256:..%2f..%2fx",
        f"sha256:{HEX}\x00",
        f"sha256:{HEX}/x",
        f"sha256::{HEX}",
        f" sha256:{HEX}",
    ],
)
def test_malformed_digests_are_invalid(text):
    with pytest.raises(DigestInvalid):
        Digest.parse(text)


@given(st.text(alphabet="sha256:" + string.hexdigits + _HOSTILE, max_size=80))
@example(f"sha256:{HEX}")
def test_an_accepted_digest_is_exactly_64_lowercase_hex(text):
    try:
        digest = Digest.parse(text)
    except (DigestInvalid, DigestUnsupported):
        return
    assert str(digest) == text
    assert len(digest.hex) == 64 and set(digest.hex) <= set("0123456789abcdef")


@given(st.binary(max_size=64))
def test_every_sha256_of_content_is_a_valid_digest(data):
    hex_digest = hashlib.sha256(data).hexdigest()
    assert Digest.parse(f"sha256:{hex_digest}").hex == hex_digest


# -- manifest references --------------------------------------------------------


def test_reference_without_colon_is_a_tag():
    assert parse_reference("latest") == "latest"
    assert not looks_like_digest("latest")


def test_reference_with_colon_is_a_digest():
    assert parse_reference(f"sha256:{HEX}") == Digest(HEX)


def test_reference_with_sha512_is_unsupported():
    with pytest.raises(DigestUnsupported):
        parse_reference("sha512:" + hashlib.sha512(b"x").hexdigest())


@pytest.mark.parametrize("text", ["sha256:short", "sha256:", ":latest"])
def test_malformed_digest_reference_is_digest_invalid(text):
    with pytest.raises(DigestInvalid):
        parse_reference(text)


@pytest.mark.parametrize("text", ["..", "a/b", ".x", "%2e%2e"])
def test_bad_tag_reference_is_tag_invalid(text):
    with pytest.raises(TagInvalid):
        parse_reference(text)


# -- Docker Hub's library/ rule ---------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("alpine", "library/alpine"),
        ("library/alpine", "library/alpine"),
        ("bitnami/redis", "bitnami/redis"),
        ("a/b/c", "a/b/c"),
    ],
)
def test_docker_hub_one_component_names_are_official_images(name, expected):
    assert docker_hub_name(name) == expected


@given(st.from_regex(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+){0,2}", fullmatch=True))
def test_docker_hub_rule_keeps_names_valid_and_is_idempotent(name):
    if len(name) > 200:
        return
    canonical = docker_hub_name(name)
    assert parse_name(canonical) == canonical
    assert docker_hub_name(canonical) == canonical
    assert "/" in canonical
