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
    """Reads the registries' counters into metric families; what belongs to
    one registry carries its ``registry`` label."""

    _caches: list[RegistryCache]
    _site: MirrorSite

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "mirrorproxy_requests",
            "Client requests by endpoint kind, status and registry (empty: none named or routed).",
            labels=["kind", "status", "registry"],
        )
        for (kind, status, registry), count in sorted(self._site.responses.items()):
            requests.add_metric([kind, str(status), registry], count)
        yield requests
        yield from self._per_registry()
        yield from self._cache_wide()
        yield from self._connections()
        yield from self._cluster()

    def _per_registry(self) -> Iterator[Metric]:
        outcomes = CounterMetricFamily(
            "mirrorproxy_cache_requests",
            "Manifest and blob answers by cache outcome (HIT, MISS, JOIN, STALE, REVALIDATED).",
            labels=["kind", "outcome", "registry"],
        )
        served = CounterMetricFamily(
            "mirrorproxy_served_bytes", "Bytes sent to clients, by source.", labels=["source", "registry"]
        )
        upstream = CounterMetricFamily(
            "mirrorproxy_upstream_requests",
            "Requests to upstream by method, kind and status (0: no answer).",
            labels=["method", "kind", "status", "registry"],
        )
        tokens = CounterMetricFamily(
            "mirrorproxy_token_fetches", "Token requests to upstream's auth service.", labels=["registry"]
        )
        failures = CounterMetricFamily(
            "mirrorproxy_fill_failures",
            "Blob fetches that failed, by why (digest and length: verification failures).",
            labels=["reason", "registry"],
        )
        fills = GaugeMetricFamily("mirrorproxy_fills_in_flight", "Blob fetches under way.", labels=["registry"])
        remaining = GaugeMetricFamily(
            "mirrorproxy_upstream_ratelimit_remaining",
            "Upstream's ratelimit-remaining header (Docker Hub pulls left), latest seen.",
            labels=["registry"],
        )
        for cache in self._caches:
            registry = cache.registry.namespace
            for outcome, count in sorted(cache.blobs.outcomes.items()):
                outcomes.add_metric(["blob", outcome, registry], count)
            for outcome, count in sorted(cache.manifests.outcomes.items()):
                outcomes.add_metric(["manifest", outcome, registry], count)
            for source in ("cache", "upstream"):
                served.add_metric([source, registry], cache.served_bytes[source])
            for (method, kind, status), count in sorted(cache.upstream.requests.items()):
                upstream.add_metric([method, kind, str(status), registry], count)
            tokens.add_metric([registry], cache.upstream.token_requests)
            for reason in ("digest", "length", "upstream", "disk"):
                failures.add_metric([reason, registry], cache.blobs.failures[reason])
            fills.add_metric([registry], cache.blobs.fills_running)
            if cache.upstream.ratelimit_remaining is not None:
                remaining.add_metric([registry], cache.upstream.ratelimit_remaining)
        yield from (outcomes, served, upstream, tokens, failures, fills)
        if remaining.samples:
            yield remaining

    def _cache_wide(self) -> Iterator[Metric]:
        store = self._caches[0].store
        if store.bytes is not None:
            yield GaugeMetricFamily("mirrorproxy_cache_bytes", "Bytes in the cache.", value=store.bytes)
            yield GaugeMetricFamily(
                "mirrorproxy_cache_entries", "Blobs and manifests in the cache.", value=store.entries
            )
        evictor = self._caches[0].blobs.evictor
        yield CounterMetricFamily(
            "mirrorproxy_evictions", "Blobs evicted from the cache.", value=evictor.evicted if evictor else 0
        )

    def _cluster(self) -> Iterator[Metric]:
        """A node of a cluster: where its fills came from, what it put in
        the bucket, what failed of the bucket and of Redis."""
        node = self._caches[0].blobs.cluster
        if node is None:
            return
        fills = CounterMetricFamily(
            "mirrorproxy_cluster_fills", "Blob fills by where their bytes came from.", labels=["source"]
        )
        for source in ("bucket", "peer", "upstream"):
            fills.add_metric([source], node.fills_by_source[source])
        uploads = CounterMetricFamily(
            "mirrorproxy_cluster_uploads",
            "Blobs this node put in the bucket (present: another node was first; failed).",
            labels=["result"],
        )
        for result in ("added", "present", "failed"):
            uploads.add_metric([result], node.uploads[result])
        errors = CounterMetricFamily(
            "mirrorproxy_cluster_shared_errors",
            "Failed calls to the bucket or to Redis (the node served from its own tier instead).",
            labels=["operation"],
        )
        store_errors = getattr(self._caches[0].store, "errors", {})
        for operation, count in sorted({**node.bucket_errors, **store_errors}.items()):
            errors.add_metric([operation], count)
        yield from (fills, uploads, errors)
        if node.coordination is not None:
            yield GaugeMetricFamily(
                "mirrorproxy_cluster_redis_up",
                "1 if Redis answers (cluster-wide coalescing), 0 if each node coalesces only its own clients.",
                value=1 if node.coordination.health.reachable else 0,
            )

    def _connections(self) -> Iterator[Metric]:
        gate = self._site.gate
        if gate is None:
            return
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


def metrics_root(
    caches: list[RegistryCache], site: MirrorSite, clock: IReactorTime
) -> tuple[Resource, CollectorRegistry]:
    """/metrics, /healthz and /readyz for the mirror of these registries."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MirrorCollector(caches, site))
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=registry))
    root.putChild(b"healthz", _Text(b"ok\n"))
    root.putChild(b"readyz", Readiness(caches, clock))
    return root, registry


