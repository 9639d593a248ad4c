"""Metrics as Prometheus scrapes them, and the health endpoints."""

from __future__ import annotations

import os

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.testing import StringTransport
from twisted.web.server import Site

from mirrorproxy.server.metrics import metrics_root
from mirrorproxy.server.readiness import ANSWER_WINDOW, PROBE_INTERVAL, UpstreamProbe

from .harness import parse_response


def scrape(harness) -> dict[tuple[str, tuple], float]:
    _, registry = metrics_root(harness.mirrors, harness.site, harness.clock)
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def get(resource, path: str):
    site = Site(resource)
    protocol = site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(f"GET {path} HTTP/1.1\r\nHost: m\r\n\r\n".encode())
    return parse_response(transport.value(), False)


def test_a_scrape_counts_requests_outcomes_bytes_and_upstream_calls(harness):
    data = os.urandom(10_000)
    digest = harness.registry.add_blob(data)
    path = f"/v2/library/alpine/blobs/{digest}"
    harness.get(path)
    harness.get(path)
    harness.get("/v2/library/alpine/blobs/sha256:" + "0" * 64)

    samples = scrape(harness)

    assert samples[("mirrorproxy_requests_total", (("kind", "blob"), ("registry", "registry.fake"), ("status", "200")))] == 2
    assert samples[("mirrorproxy_requests_total", (("kind", "blob"), ("registry", "registry.fake"), ("status", "404")))] == 1
    assert samples[("mirrorproxy_cache_requests_total", (("kind", "blob"), ("outcome", "HIT"), ("registry", "registry.fake")))] == 1
    assert samples[("mirrorproxy_cache_requests_total", (("kind", "blob"), ("outcome", "MISS"), ("registry", "registry.fake")))] == 1
    assert samples[("mirrorproxy_served_bytes_total", (("registry", "registry.fake"), ("source", "cache")))] == len(data)
    assert samples[("mirrorproxy_served_bytes_total", (("registry", "registry.fake"), ("source", "upstream")))] == len(data)
    assert samples[("mirrorproxy_upstream_requests_total", (("kind", "blob"), ("method", "GET"), ("registry", "registry.fake"), ("status", "200")))] == 1
    assert samples[("mirrorproxy_fills_in_flight", (("registry", "registry.fake"),))] == 0


def test_a_digest_mismatch_is_counted(harness):
    data = os.urandom(1000)
    digest = harness.registry.add_blob(data)
    harness.registry.wrong_bytes[digest] = b"y" * 1000
    harness.get(f"/v2/library/alpine/blobs/{digest}")

    assert scrape(harness)[("mirrorproxy_fill_failures_total", (("reason", "digest"), ("registry", "registry.fake")))] == 1


def test_docker_hubs_ratelimit_remaining_becomes_a_gauge(harness):
    original = harness.registry.render

    def render(request):
        request.setHeader(b"ratelimit-remaining", b"97;w=21600")
        return original(request)

    harness.registry.render = render
    digest = harness.registry.add_blob(b"x" * 100)
    harness.head(f"/v2/library/alpine/blobs/{digest}")

    assert scrape(harness)[("mirrorproxy_upstream_ratelimit_remaining", (("registry", "registry.fake"),))] == 97


def probing(harness) -> UpstreamProbe:
    probe = UpstreamProbe(harness.mirror.upstream, harness.clock)
    probe.start()
    harness.pump()
    return probe


def test_healthz_and_readyz(harness):
    root, _ = metrics_root(harness.mirrors, harness.site, harness.clock)
    probing(harness)

    assert get(root, "/healthz").status == 200
    ready = get(root, "/readyz")
    assert (ready.status, ready.body) == (200, b"ready\n")
    assert harness.registry.count("GET", "/v2/") == 1


def test_readyz_is_not_ready_before_upstream_has_answered(harness):
    root, _ = metrics_root(harness.mirrors, harness.site, harness.clock)

    ready = get(root, "/readyz")

    assert (ready.status, ready.body) == (503, b"upstream not reached yet\n")


def test_a_mirror_started_with_upstream_down_is_not_ready_until_it_answers(harness):
    harness.registry.status_override = lambda seen: 503
    root, _ = metrics_root(harness.mirrors, harness.site, harness.clock)
    probing(harness)

    ready = get(root, "/readyz")
    assert ready.status == 503
    assert ready.body.startswith(b"upstream unreachable: upstream answered 503")

    harness.registry.status_override = None
    harness.clock.advance(PROBE_INTERVAL)
    harness.pump()
    assert get(root, "/readyz").status == 200
    assert harness.registry.count("GET", "/v2/") == 2


def test_readyz_fails_while_upstream_is_failing(harness):
    root, _ = metrics_root(harness.mirrors, harness.site, harness.clock)
    probing(harness)
    harness.clock.advance(1)
    harness.registry.status_override = lambda seen: 502
    harness.get("/v2/library/a/manifests/latest")

    ready = get(root, "/readyz")
    assert ready.status == 503 and ready.body.startswith(b"upstream unreachable: ")


def test_readyz_fails_once_upstream_has_been_silent_for_long(harness):
    root, _ = metrics_root(harness.mirrors, harness.site, harness.clock)
    probe = probing(harness)
    probe.stop()  # as if every probe since hung

    harness.clock.advance(ANSWER_WINDOW + 1)

    ready = get(root, "/readyz")
    assert ready.status == 503 and ready.body.startswith(b"upstream silent for ")


def test_a_full_disk_makes_the_mirror_unready_and_is_counted(tmp_path):
    from .harness import Harness, disk_fills_after

    harness = Harness(str(tmp_path / "cache"), run=disk_fills_after(0))
    root, registry = metrics_root(harness.mirrors, harness.site, harness.clock)
    probing(harness)
    data = os.urandom(100_000)
    digest = harness.registry.add_blob(data)

    assert harness.get(f"/v2/library/alpine/blobs/{digest}").body == data

    ready = get(root, "/readyz")
    assert (ready.status, ready.body) == (503, b"cache writes failing: No space left on device\n")
    assert scrape(harness)[("mirrorproxy_fill_failures_total", (("reason", "disk"), ("registry", "registry.fake")))] == 1


def test_connection_counts_are_scraped(harness):
    import ipaddress

    from twisted.internet.address import IPv4Address

    from mirrorproxy.server.channel import MirrorSite
    from mirrorproxy.server.connections import ConnectionGate

    gate = ConnectionGate(harness.clock, 1, (ipaddress.ip_network("10.0.0.0/8"),))
    site = MirrorSite(harness.site.resource, reactor=harness.clock, gate=gate)
    protocol = site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1))
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(b"GET /v2/library/a/manifests/x HTTP/1.1\r\nHost: m\r\n")  # under way
    assert site.buildProtocol(IPv4Address("TCP", "10.0.0.2", 1)) is None
    assert site.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1)) is None

    _, registry = metrics_root(harness.mirrors, site, harness.clock)
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    assert samples[("mirrorproxy_connections", ())] == 1
    assert samples[("mirrorproxy_connections_refused_total", (("reason", "limit"),))] == 1
    assert samples[("mirrorproxy_connections_refused_total", (("reason", "network"),))] == 1


def test_the_metrics_listener_logs_its_requests_as_the_registry_listener_does(harness):
    from twisted.logger import globalLogPublisher

    from mirrorproxy.server.metrics import metrics_site

    root, _ = metrics_root(harness.mirrors, harness.site, harness.clock)
    site = metrics_site(root, harness.clock)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        protocol = site.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: m\r\n\r\n")
    finally:
        globalLogPublisher.removeObserver(events.append)

    [event] = [e for e in events if e.get("log_namespace") == "mirrorproxy.access"]
    assert (event["method"], event["path"], event["status"], event["kind"]) == ("GET", "/healthz", 200, "healthz")
    assert not harness.site.responses, "not counted as registry requests"
    assert not [e for e in events if "log_format" not in e and "message" in e], "no combined-log line"


# -- several registries --------------------------------------------------------------


def two_registries(tmp_path):
    from ..fakeregistry import FakeRegistry
    from .harness import Harness

    return Harness(
        str(tmp_path / "cache"),
        upstream_url="https://registry-1.docker.io",
        others={"ghcr.io=http://ghcr.fake": FakeRegistry()},
    )


def test_metrics_carry_the_registry(tmp_path):
    harness = two_registries(tmp_path)
    harness.registry.add_image("owner/app", "1", [b"hub"])
    harness.fakes["ghcr.io"].add_image("owner/app", "1", [b"ghcr"])
    harness.get("/v2/owner/app/manifests/1")
    harness.get("/v2/ghcr.io/owner/app/manifests/1")
    harness.get("/v2/ghcr.io/owner/app/manifests/1")

    samples = scrape(harness)

    def upstream_gets(registry: str) -> float:
        key = (("kind", "manifest"), ("method", "GET"), ("registry", registry), ("status", "200"))
        return samples[("mirrorproxy_upstream_requests_total", key)]

    assert (upstream_gets("docker.io"), upstream_gets("ghcr.io")) == (1, 1)
    hits = (("kind", "manifest"), ("outcome", "HIT"), ("registry", "ghcr.io"))
    assert samples[("mirrorproxy_cache_requests_total", hits)] == 1
    requests = (("kind", "manifest"), ("registry", "ghcr.io"), ("status", "200"))
    assert samples[("mirrorproxy_requests_total", requests)] == 2


def test_one_upstream_down_of_two_is_reported_but_ready(tmp_path):
    harness = two_registries(tmp_path)
    root, _ = metrics_root(harness.mirrors, harness.site, harness.clock)
    harness.fakes["ghcr.io"].status_override = lambda seen: 503
    for mirror in harness.mirrors:
        UpstreamProbe(mirror.upstream, harness.clock).start()
    harness.pump()

    ready = get(root, "/readyz")
    assert ready.status == 200
    assert ready.body.startswith(b"ready\nghcr.io: upstream unreachable: upstream answered 503")

    harness.registry.status_override = lambda seen: 503
    harness.clock.advance(PROBE_INTERVAL)
    harness.pump()
    both = get(root, "/readyz")
    assert both.status == 503
    assert both.body.count(b"upstream unreachable") == 2
