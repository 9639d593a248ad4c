"""Prometheus metrics, /healthz and /readyz, on a listener of their own.

The mirror's parts keep plain counters (no Prometheus types in the core);
a collector reads them at scrape time, so a scrape costs nothing between
scrapes and the core stays testable without a metrics registry.
"""

from __future__ import annotations

from typing import Iterator

from attrs import define
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.twisted import MetricsResource
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request

from ..cache.registrycache import RegistryCache
from .channel import MirrorSite
from .readiness import Readiness


@define(eq=False)
class MirrorCollector:
    """Reads one mirror's counters into metric families."""

    _mirror: RegistryCache
    _site: MirrorSite

    def collect(self) -> Iterator[Metric]:
        mirror = self._mirror
        requests = CounterMetricFamily(
            "mirrorproxy_requests", "Client requests by endpoint kind and status.", labels=["kind", "status"]
        )
        for (kind, status), count in sorted(self._site.responses.items()):
            requests.add_metric([kind, str(status)], count)
        yield requests

        outcomes = CounterMetricFamily(
            "mirrorproxy_cache_requests",
            "Manifest and blob answers by cache outcome (HIT, MISS, JOIN, STALE, REVALIDATED).",
            labels=["kind", "outcome"],
        )
        for outcome, count in sorted(mirror.blobs.outcomes.items()):
            outcomes.add_metric(["blob", outcome], count)
        for outcome, count in sorted(mirror.manifests.outcomes.items()):
            outcomes.add_metric(["manifest", outcome], count)
        yield outcomes

        served = CounterMetricFamily(
            "mirrorproxy_served_bytes", "Bytes sent to clients, by source.", labels=["source"]
        )
        for source in ("cache", "upstream"):
            served.add_metric([source], mirror.served_bytes[source])
        yield served

        upstream = CounterMetricFamily(
            "mirrorproxy_upstream_requests",
            "Requests to upstream by method, kind and status (0: no answer).",
            labels=["method", "kind", "status"],
        )
        for (method, kind, status), count in sorted(mirror.upstream.requests.items()):
            upstream.add_metric([method, kind, str(status)], count)
        yield upstream

        yield CounterMetricFamily(
            "mirrorproxy_token_fetches", "Token requests to upstream's auth service.",
            value=mirror.upstream.token_requests,
        )
        failures = CounterMetricFamily(
            "mirrorproxy_fill_failures",
            "Blob fetches that failed, by why (digest and length: verification failures).",
            labels=["reason"],
        )
        for reason in ("digest", "length", "upstream", "disk"):
            failures.add_metric([reason], mirror.blobs.failures[reason])
        yield failures

        yield GaugeMetricFamily(
            "mirrorproxy_fills_in_flight", "Blob fetches under way.", value=mirror.blobs.fills_running
        )
        if mirror.store.bytes is not None:
            yield GaugeMetricFamily("mirrorproxy_cache_bytes", "Bytes in the cache.", value=mirror.store.bytes)
            yield GaugeMetricFamily(
                "mirrorproxy_cache_entries", "Blobs and manifests in the cache.", value=mirror.store.entries
            )
        evictor = mirror.blobs.evictor
        yield CounterMetricFamily(
            "mirrorproxy_evictions", "Blobs evicted from the cache.", value=evictor.evicted if evictor else 0
        )
        gate = self._site.gate
        if gate is not None:
            yield GaugeMetricFamily("mirrorproxy_connections", "Client connections open.", value=gate.open)
            refused = CounterMetricFamily(
                "mirrorproxy_connections_refused",
                "Client connections closed at accept, by why (limit: --max-connections and none idle; "
                "network: not in --allow).",
                labels=["reason"],
            )
            for reason in ("limit", "network"):
                refused.add_metric([reason], gate.refused[reason])
            yield refused
            yield CounterMetricFamily(
                "mirrorproxy_connections_reclaimed",
                "Idle client connections closed to make room for new ones.",
                value=gate.reclaimed,
            )
        if mirror.upstream.ratelimit_remaining is not None:
            yield GaugeMetricFamily(
                "mirrorproxy_upstream_ratelimit_remaining",
                "Upstream's ratelimit-remaining header (Docker Hub pulls left), latest seen.",
                value=mirror.upstream.ratelimit_remaining,
            )


class _Text(Resource):
    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self._body = body

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return self._body


def describe_metrics_path(path: bytes) -> tuple[str, str | None, str | None]:
    """What a request to the metrics listener asked for, for its access log."""
    kind = path.decode("latin-1", "replace").strip("/")
    return (kind if kind in ("metrics", "healthz", "readyz") else "invalid"), None, None


def metrics_site(root: Resource, clock: IReactorTime) -> MirrorSite:
    """The metrics listener's site: its requests logged as the registry
    listener's are, counted apart from them."""
    return MirrorSite(root, reactor=clock, describe=describe_metrics_path)


def metrics_root(mirror: RegistryCache, site: MirrorSite, clock: IReactorTime) -> tuple[Resource, CollectorRegistry]:
    """/metrics, /healthz and /readyz for one mirror."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MirrorCollector(mirror, site))
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=registry))
    root.putChild(b"healthz", _Text(b"ok\n"))
    root.putChild(b"readyz", Readiness(mirror, clock))
    return root, registry


