"""Fuzzing the request router: whatever the path, a registry answer, and
nothing read or written outside the cache."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirrorproxy.api.errors import RegistryError
from mirrorproxy.api.resource import route
from mirrorproxy.registry.names import parse_name

from .harness import Harness

_PIECES = st.sampled_from(
    ["..", ".", "%2e%2e", "%2f", "%2F", "\\", "%00", "%5c", "//", "v2", "library", "a", "manifests",
     "blobs", "tags", "list", "latest", "sha256:" + "a" * 64, "_tags", "spool", "~", "%", ":", "?ns=x"]
)
_PATHS = st.lists(st.one_of(_PIECES, st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=12)), max_size=8).map(
    lambda parts: "/v2/" + "/".join(parts)
)


@given(st.binary(max_size=300))
def test_route_answers_any_bytes_with_a_route_or_a_registry_error(path):
    try:
        where = route(path)
    except RegistryError as e:
        assert 400 <= e.status < 500
        return
    if where.kind != "base":
        # Whatever the router lets through still meets the name grammar
        # (checked next) or is refused there.
        try:
            parse_name(where.name)
        except ValueError:
            pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=_PATHS, method=st.sampled_from(["GET", "HEAD"]))
def test_no_request_path_touches_anything_outside_the_cache(tmp_path_factory, path, method):
    base = tmp_path_factory.getbasetemp() / "fuzz"
    harness = _HARNESSES.get(str(base))
    if harness is None:
        harness = _HARNESSES[str(base)] = Harness(str(base / "cache"))
        (base / "outside").mkdir(parents=True, exist_ok=True)
    before = sorted(os.listdir(base))

    client = harness.send(method, path.replace(" ", "%20"))
    harness.pump()
    response = client.response()

    assert response is not None and response.status in (200, 400, 403, 404, 405, 416, 502)
    if response.status >= 400 and method == "GET":
        assert response.json()["errors"][0]["code"]
    assert sorted(os.listdir(base)) == before
    assert not any(s.path.count("..") for s in harness.registry.seen)
    # Not an open proxy: whatever the path, only the upstream is contacted.
    assert {s.host for s in harness.registry.seen} <= {"registry.fake"}


_HARNESSES: dict[str, Harness] = {}
