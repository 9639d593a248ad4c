"""``mirrorproxy prefetch``: image names, and pulls as a client makes them.

The mirror here is a static HTTP server holding one registry's answers; the
end-to-end tests pull through the real mirror.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest

from mirrorproxy.admin.imagerefs import BadImageName, ImageName, parse_image
from mirrorproxy.registry.descriptors import Platform
from mirrorproxy.registry.mediatypes import ALL_MANIFEST_TYPES, OCI_MANIFEST
from mirrorproxy.registry.names import Digest

from .clirunner import invoke
from .mirroranswers import Registry
from .staticserver import Answer, StaticServer, serve

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alpine", ImageName("alpine", "latest")),
        ("library/alpine:3.19", ImageName("library/alpine", "3.19")),
        ("docker.io/library/alpine", ImageName("library/alpine", "latest")),
        ("index.docker.io/org/img:v1", ImageName("org/img", "v1")),
        (f"org/img@{DIGEST}", ImageName("org/img", Digest.parse(DIGEST))),
        (f"org/img:v1@{DIGEST}", ImageName("org/img", Digest.parse(DIGEST))),
        ("org/sub.team/img-name:1.0_rc", ImageName("org/sub.team/img-name", "1.0_rc")),
        # Another registry the mirror serves stays: its API paths name it.
        ("ghcr.io/org/img", ImageName("org/img", "latest", "ghcr.io")),
        ("localhost:5000/img:2", ImageName("img", "2", "localhost:5000")),
        ("GHCR.io/org/img", ImageName("org/img", "latest", "ghcr.io")),
    ],
)
def test_image_names_as_people_type_them(text: str, expected: ImageName) -> None:
    assert parse_image(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("Alpine", "invalid repository name"),
        ("alpine:", "invalid tag"),
        ("org/img@sha256:abc", "invalid sha256 digest"),
        ("org/img@sha512:" + "a" * 128, "not supported"),
        ("-x.io/org/img", "is not a registry name"),
        ("", "invalid repository name"),
    ],
)
def test_bad_image_names_say_why(text: str, why: str) -> None:
    with pytest.raises(BadImageName, match=why):
        parse_image(text)


@pytest.mark.parametrize(
    ("entry", "wanted", "matches"),
    [
        (Platform("linux", "amd64"), "linux/amd64", True),
        (Platform("linux", "arm64", "v8"), "linux/arm64", True),
        (Platform("linux", "arm64"), "linux/arm64/v8", True),
        (Platform("linux", "arm", "v7"), "linux/arm/v6", False),
        (Platform("windows", "amd64"), "linux/amd64", False),
    ],
)
def test_platform_matching(entry: Platform, wanted: str, matches: bool) -> None:
    assert entry.matches(Platform.parse(wanted)) is matches


@pytest.fixture
def mirror() -> Any:
    with serve({"/v2/": Answer(200, {}, b"{}")}) as server:
        yield server


def blob_gets(server: StaticServer) -> set[str]:
    return {p.rsplit("/", 1)[1] for p in server.paths() if "/blobs/" in p}


def registry_error(status: int, code: str, message: str) -> Answer:
    """An answer with a registry's JSON error body."""
    return Answer(status, {}, json.dumps({"errors": [{"code": code, "message": message}]}).encode())


def test_every_platform_of_an_index_but_not_its_attestations(mirror: StaticServer) -> None:
    registry = Registry(mirror)
    amd64, amd64_blobs = registry.image(3000, 4000)
    arm64, arm64_blobs = registry.image(5000)
    attestation, _ = registry.image(10)
    registry.index(
        "1",
        [
            (amd64, {"os": "linux", "architecture": "amd64"}),
            (arm64, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
            (attestation, {"os": "unknown", "architecture": "unknown"}),
        ],
    )

    result = invoke("prefetch", "org/app:1", "--mirror", mirror.url)

    assert result.exit_code == 0, result.output
    assert blob_gets(mirror) == {b["digest"] for b in amd64_blobs + arm64_blobs}
    assert attestation["digest"] not in "".join(mirror.paths())
    assert "resolved org/app:1" in result.stdout and "for linux/amd64, linux/arm64/v8" in result.stdout
    assert "pulled org/app:1: 5 blobs" in result.stdout and "(MISS 5)" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 image pulled, 0 failed"
    # What a modern client asks for, in the order the mirror asks upstream.
    accept = next(s.headers["accept"] for s in mirror.seen if s.path.endswith("/manifests/1"))
    assert [t.strip() for t in accept.split(",")] == ALL_MANIFEST_TYPES


def test_only_the_named_platform(mirror: StaticServer) -> None:
    registry = Registry(mirror)
    amd64, _ = registry.image(3000)
    arm64, arm64_blobs = registry.image(5000)
    registry.index(
        "1",
        [
            (amd64, {"os": "linux", "architecture": "amd64"}),
            (arm64, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        ],
    )

    result = invoke("prefetch", "org/app:1", "--platform", "linux/arm64", "--mirror", mirror.url)

    assert result.exit_code == 0, result.output
    assert blob_gets(mirror) == {b["digest"] for b in arm64_blobs}
    assert amd64["digest"] not in "".join(mirror.paths())


def test_a_platform_the_image_lacks_fails_that_image_only(mirror: StaticServer) -> None:
    registry = Registry(mirror)
    amd64, _ = registry.image(10)
    registry.index("1", [(amd64, {"os": "linux", "architecture": "amd64"})])
    other = Registry(mirror, "org/other")
    other.image(10, tag="1", platform="linux/s390x")

    result = invoke(
        "prefetch", "org/app:1", "org/other:1", "--platform", "linux/s390x", "--mirror", mirror.url
    )

    assert result.exit_code == 1
    assert result.stderr == "warning: org/app:1 has no linux/s390x (it has: linux/amd64)\n"
    assert "FAILED org/app:1: nothing to pull for linux/s390x" in result.stdout.splitlines()
    assert "pulled org/other:1" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 image pulled, 1 failed"
    assert not any("/org/app/blobs/" in p for p in mirror.paths())


def test_a_platform_some_images_lack_is_a_warning_when_another_named_one_is_pulled(
    mirror: StaticServer,
) -> None:
    registry = Registry(mirror)
    amd64, _ = registry.image(3000)
    arm64, arm64_blobs = registry.image(5000)
    registry.index(
        "1",
        [
            (amd64, {"os": "linux", "architecture": "amd64"}),
            (arm64, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        ],
    )

    platforms = ["--platform", "linux/s390x", "--platform", "linux/arm64"]
    result = invoke("prefetch", "org/app:1", *platforms, "--mirror", mirror.url)

    assert result.exit_code == 0, result.output
    assert result.stderr == "warning: org/app:1 has no linux/s390x (it has: linux/amd64, linux/arm64/v8)\n"
    assert blob_gets(mirror) == {b["digest"] for b in arm64_blobs}
    assert result.stdout.splitlines()[-1] == "1 image pulled, 0 failed"


def test_a_single_platform_image_of_another_platform_is_not_pulled(mirror: StaticServer) -> None:
    # Its platform is in its config, the one blob fetched to learn it.
    registry = Registry(mirror)
    _, blobs = registry.image(3000, 4000, tag="1", platform="linux/amd64")

    result = invoke("prefetch", "org/app:1", "--platform", "linux/s390x", "--mirror", mirror.url)

    assert result.exit_code == 1
    assert result.stderr == "warning: org/app:1 has no linux/s390x (it has: linux/amd64)\n"
    assert "FAILED org/app:1: nothing to pull for linux/s390x" in result.stdout.splitlines()
    assert blob_gets(mirror) == {blobs[0]["digest"]}


def test_a_single_platform_image_of_the_named_platform_is_pulled_once(mirror: StaticServer) -> None:
    registry = Registry(mirror)
    _, blobs = registry.image(3000, tag="1", platform="linux/arm64/v8")

    result = invoke("prefetch", "org/app:1", "--platform", "linux/arm64", "--mirror", mirror.url)

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert sorted(p.rsplit("/", 1)[1] for p in mirror.paths() if "/blobs/" in p) == sorted(
        b["digest"] for b in blobs
    )
    assert "pulled org/app:1: 2 blobs" in result.stdout and "(MISS 2)" in result.stdout


def test_a_single_platform_image_whose_config_does_not_say_is_pulled_with_a_warning(
    mirror: StaticServer,
) -> None:
    registry = Registry(mirror)
    _, blobs = registry.image(3000, tag="1")  # a config of random bytes

    result = invoke("prefetch", "org/app:1", "--platform", "linux/amd64", "--mirror", mirror.url)

    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "warning: org/app:1: cannot tell its platform (its config is not JSON); pulled it all the same\n"
    )
    assert blob_gets(mirror) == {b["digest"] for b in blobs}


def test_a_blob_shared_by_two_images_is_pulled_once(mirror: StaticServer) -> None:
    one = Registry(mirror, "org/one")
    shared = one.blob(2000)
    other = Registry(mirror, "org/two")
    for registry in (one, other):
        config = registry.blob(64)
        registry.manifest(
            {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [shared]},
            OCI_MANIFEST,
            "1",
        )

    result = invoke("prefetch", "org/one:1", "org/two:1", "--mirror", mirror.url)

    assert result.exit_code == 0, result.output
    assert sum(1 for p in mirror.paths() if p.endswith(shared["digest"])) == 1
    assert "pulled org/one:1: 2 blobs" in result.stdout and "pulled org/two:1: 2 blobs" in result.stdout


def test_a_blob_with_the_wrong_bytes_fails_the_image(mirror: StaticServer) -> None:
    registry = Registry(mirror)
    _, blobs = registry.image(1000, tag="1")
    path = f"/v2/org/app/blobs/{blobs[1]['digest']}"
    mirror.answers[path] = Answer(200, {}, os.urandom(1000))

    result = invoke("prefetch", "org/app:1", "--mirror", mirror.url)

    assert result.exit_code == 1
    assert f"FAILED org/app:1: blob org/app@{blobs[1]['digest']}: body hashes to sha256:" in result.stdout


def test_a_manifest_whose_bytes_do_not_match_its_digest_fails(mirror: StaticServer) -> None:
    registry = Registry(mirror)
    registry.image(10, tag="1")
    answer = mirror.answers["/v2/org/app/manifests/1"]
    mirror.answers["/v2/org/app/manifests/1"] = Answer(200, answer.headers, answer.body + b" ")

    result = invoke("prefetch", "org/app:1", "--mirror", mirror.url)

    assert result.exit_code == 1
    assert "body hashes to" in result.stdout


def test_registry_errors_are_reported_with_their_code(mirror: StaticServer) -> None:
    mirror.answers["/v2/org/app/manifests/9"] = registry_error(404, "MANIFEST_UNKNOWN", "manifest unknown")

    result = invoke("prefetch", "org/app:9", "--mirror", mirror.url)

    assert result.exit_code == 1
    assert "FAILED org/app:9: manifest org/app:9: 404 MANIFEST_UNKNOWN: manifest unknown" in result.stdout


def test_an_unreachable_mirror_is_one_clear_line() -> None:
    with serve() as server:
        url = server.url  # a port that was just free, and is again
    result = invoke("prefetch", "alpine", "--mirror", url)

    assert result.exit_code == 1
    assert result.output.strip() == f"Error: cannot connect to the mirror at {url}: Connection refused"


def test_bad_arguments_are_usage_errors() -> None:
    bad_name = invoke("prefetch", "Alpine", "--mirror", "http://127.0.0.1:1")
    assert bad_name.exit_code == 2 and "invalid repository name 'Alpine'" in bad_name.output

    bad_url = invoke("prefetch", "alpine", "--mirror", "ftp://mirror")
    assert bad_url.exit_code == 2 and "http:// or https://" in bad_url.output

    bad_platform = invoke("prefetch", "alpine", "--platform", "linux")
    assert bad_platform.exit_code == 2 and "os/arch" in bad_platform.output

    assert "Traceback" not in bad_name.output + bad_url.output + bad_platform.output


def test_credentials_for_a_mirror_with_an_htpasswd_file(
    mirror: StaticServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    Registry(mirror).image(10, tag="1")
    monkeypatch.setenv("MIRRORPROXY_MIRROR_USERNAME", "alice")
    monkeypatch.setenv("MIRRORPROXY_MIRROR_PASSWORD", "correct horse")

    result = invoke("prefetch", "org/app:1", "--mirror", mirror.url)

    assert result.exit_code == 0, result.output
    expected = "Basic " + base64.b64encode(b"alice:correct horse").decode()
    assert {s.headers.get("authorization") for s in mirror.seen} == {expected}
    assert "correct horse" not in result.output


def test_a_username_without_a_password_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIRRORPROXY_MIRROR_PASSWORD", raising=False)

    result = invoke("prefetch", "alpine", "--username", "alice")

    assert result.exit_code == 2
    assert "MIRRORPROXY_MIRROR_PASSWORD" in result.output


def test_a_mirror_that_refuses_is_one_clear_line(mirror: StaticServer) -> None:
    mirror.answers["/v2/"] = registry_error(401, "UNAUTHORIZED", "authentication required")

    result = invoke("prefetch", "alpine", "--mirror", mirror.url)

    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {mirror.url}/v2/ answered 401 UNAUTHORIZED: authentication required"
    )


def test_an_image_of_another_registry_is_pulled_through_its_path_prefix(mirror: StaticServer) -> None:
    registry = Registry(mirror, name="ghcr.io/org/app")
    _, blobs = registry.image(3000, tag="1")

    result = invoke("prefetch", "ghcr.io/org/app:1", "--mirror", mirror.url)

    assert result.exit_code == 0, result.output
    asked = [p for p in mirror.paths() if p != "/v2/"]
    assert asked and all(p.startswith("/v2/ghcr.io/org/app/") for p in asked)
    assert blob_gets(mirror) == {b["digest"] for b in blobs}
    assert "pulled ghcr.io/org/app:1" in result.stdout
