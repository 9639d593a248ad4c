"""Building the running mirror from Settings: pools, clients, caches, site."""

from __future__ import annotations

import os
from functools import partial
from typing import Any, Callable
from urllib.parse import urlsplit

from attrs import define
from treq.client import HTTPClient
from twisted.application import strports
from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.client import HTTPConnectionPool

from ..api.guard import AccessSettings, guard
from ..api.openresponses import OpenResponses
from ..api.resource import RegistryRoot
from ..api.routing import Router
from ..cache.blobs import BlobCache
from ..cache.cluster.events import EventHandler
from ..cache.eviction import Evictor
from ..cache.manifests import ManifestCache
from ..cache.negative import NotFoundCache
from ..cache.registrycache import RegistryCache
from ..cache.taglists import TagListCache
from ..common.networks import parse_networks
from ..common.runner import Runner
from ..storage import ICacheStore
from ..storage.filesystem import FilesystemStore
from ..upstream.auth import Authenticator
from ..upstream.client import UpstreamClient
from ..upstream.egress import INSECURE_WARNING, make_agent, proxy_settings
from ..upstream.egress.addresses import AddressPolicy
from .channel import MirrorSite
from .clusterbuild import CoordinationService, Shared, build_shared
from .config import RegistrySettings, Settings
from .connections import ConnectionGate, default_max_connections, descriptor_limit
from .drain import GracefulService
from .metrics import metrics_root, metrics_site
from .readiness import UpstreamProbe

log = Logger()

# Enough threads for cold reads and fsyncs of many clients at once; file I/O
# releases the GIL, so these overlap.
IO_THREADS = 16
# bcrypt checks of client passwords: few (successes are remembered), slow on
# purpose, and kept apart so a flood of wrong passwords cannot starve file I/O.
AUTH_THREADS = 2


def redirect_policy(registry: RegistrySettings) -> AddressPolicy:
    """Where an upstream's redirects may lead: its own host, global
    addresses, and the networks the operator allowed."""
    host = urlsplit(registry.upstream.url).hostname or ""
    return AddressPolicy(host, parse_networks(registry.upstream_redirect_allow, "--upstream-redirect-allow"))


# For a registry: the client for its requests, and the one for hosts it
# redirects to (whose connections the redirect policy checks), if apart.
Clients = Callable[[RegistrySettings], tuple[HTTPClient, HTTPClient | None]]


def build_caches(
    settings: Settings, clients: Clients, clock: IReactorTime, run: Runner, shared: Shared | None = None
) -> list[RegistryCache]:
    """Every registry's cache, over one store; the unit tests use this too.

    Each registry has its own client, tokens, tag records, manifests, blobs
    and remembered 404s, keyed in the store by its namespace; one evictor
    keeps the whole store (a cluster node's local tier) under its size."""
    store: ICacheStore = FilesystemStore(settings.cache_dir, run) if shared is None else shared.store
    caches = [_registry_cache(registry, settings, store, clients, clock, run) for registry in settings.served()]
    if shared is not None:
        for cache in caches:
            cache.blobs.cluster = shared.node
            cache.manifests.revalidation_gate = shared.store.first_to_revalidate
    if settings.max_cache_size is not None:

        def in_use() -> set[tuple[str, str]]:
            return set().union(*(cache.blobs.in_use() for cache in caches))

        evictor = Evictor(store, settings.max_cache_size, in_use)
        for cache in caches:
            cache.blobs.evictor = evictor
    return caches


def _registry_cache(
    registry: RegistrySettings,
    settings: Settings,
    store: ICacheStore,
    clients: Clients,
    clock: IReactorTime,
    run: Runner,
) -> RegistryCache:
    http, redirect_http = clients(registry)
    client: UpstreamClient

    async def fetch_token(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
        return await client.token_fetch(url, headers)

    auth = Authenticator(fetch_token, clock, registry.credentials)
    client = UpstreamClient(
        registry.upstream,
        http,
        clock,
        auth,
        settings.timeouts,
        redirect_policy=redirect_policy(registry),
        redirect_http=redirect_http,
    )
    key = registry.upstream.cache_key
    missing = NotFoundCache(clock, settings.negative_ttl)
    return RegistryCache(
        registry=registry.upstream,
        upstream=client,
        manifests=ManifestCache(key, client, store, clock, registry.tag_ttl, missing),
        blobs=BlobCache(key, client, store, run, clock, settings.timeouts.body_silence),
        tags=TagListCache(client, clock, registry.tag_ttl, missing),
        run=run,
        store=store,
    )


@define(eq=False)
class _ThreadPoolService(Service):
    pool: ThreadPool

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> Any:
        super().stopService()
        self.pool.stop()


@define(eq=False)
class _ConnectionPoolService(Service):
    pool: HTTPConnectionPool

    def stopService(self) -> Any:
        super().stopService()
        return self.pool.closeCachedConnections()


def make_mirror_service(settings: Settings, reactor: Any) -> IService:
    """The whole service: listeners, the I/O thread pool, the upstream pool.

    Raises store.CacheDirError before anything starts if the cache is
    unusable, and ConfigError if the htpasswd file or a network is.
    """
    responses = OpenResponses()
    top = GracefulService(responses, reactor, settings.drain_timeout)
    threads = ThreadPool(minthreads=1, maxthreads=IO_THREADS, name="mirrorproxy-io")
    top.add_backend(_ThreadPoolService(threads))
    run: Runner = partial(deferToThreadPool, reactor, threads)

    def agent_with_pool(registry: RegistrySettings, address_policy: AddressPolicy | None) -> HTTPClient:
        # Each agent its own pool: pooled connections are keyed by target,
        # not by the checks made when they were opened.
        connections = HTTPConnectionPool(reactor, persistent=True)
        connections.maxPersistentPerHost = 16
        top.add_backend(_ConnectionPoolService(connections))
        return HTTPClient(
            make_agent(
                reactor,
                connections,
                proxy=proxy_settings(registry.upstream_proxy, os.environ),
                ca_file=registry.upstream_ca,
                verify=not registry.upstream_insecure,
                connect_timeout=settings.timeouts.connect,
                address_policy=address_policy,
            )
        )

    def clients(registry: RegistrySettings) -> tuple[HTTPClient, HTTPClient | None]:
        proxy = proxy_settings(registry.upstream_proxy, os.environ)
        if proxy is not None:
            log.info("{registry} egress: {routes}", registry=registry.namespace, routes=proxy.describe())
            for note in proxy.notes:
                log.warn("{registry} egress: {note}", registry=registry.namespace, note=note)
        if registry.upstream_insecure:
            log.warn("{registry}: {warning}", registry=registry.namespace, warning=INSECURE_WARNING)
        return agent_with_pool(registry, None), agent_with_pool(registry, redirect_policy(registry))

    shared = None
    if settings.cluster.shared:
        shared = build_shared(settings.cluster, settings.cache_dir, reactor, run)
        top.add_backend(_ConnectionPoolService(shared.connections))
        if shared.coordination is not None:
            top.add_backend(CoordinationService(shared.coordination))
    caches = build_caches(settings, clients, reactor, run, shared)
    if shared is not None and shared.coordination is not None:
        shared.coordination.events.listen(EventHandler(caches, shared.store, run))
    store = caches[0].store
    store.prepare()
    top.add_backend(_Measure(store))
    for cache in caches:
        top.add_backend(_Probe(UpstreamProbe(cache.upstream, reactor)))
    default = settings.default_registry()
    router = Router(caches, default.namespace if default else None, dict(settings.hosts))
    root: Any = RegistryRoot(router, responses)
    access = AccessSettings.from_options(settings.htpasswd, settings.allow)
    if access.enabled:
        checkers = ThreadPool(minthreads=0, maxthreads=AUTH_THREADS, name="mirrorproxy-auth")
        top.add_backend(_ThreadPoolService(checkers))
        root = guard(root, access, partial(deferToThreadPool, reactor, checkers), reactor)
    max_connections = settings.max_connections or default_max_connections(descriptor_limit())
    gate = ConnectionGate(reactor, max_connections, parse_networks(settings.allow, "--allow"))
    site = MirrorSite(root, gate=gate)
    site.displayTracebacks = False
    for endpoint in settings.listen:
        top.add_listener(strports.service(endpoint, site, reactor=reactor), endpoint)
    if settings.metrics_listen:
        metrics, _ = metrics_root(caches, site, reactor)
        for endpoint in settings.metrics_listen:
            top.add_listener(
                strports.service(endpoint, metrics_site(metrics, reactor), reactor=reactor), endpoint
            )
    for cache in caches:
        log.info(
            "mirroring {registry} from {upstream} into {cache_dir}{default}",
            registry=cache.registry.namespace,
            upstream=cache.registry.url,
            cache_dir=os.path.abspath(settings.cache_dir),
            default=" (for requests that name no registry)" if cache.registry.namespace == router.default else "",
        )
    log.info(
        "taking up to {count} client connections (file descriptor limit {limit})",
        count=max_connections,
        limit=descriptor_limit(),
    )
    return top


@define(eq=False)
class _Probe(Service):
    """Asks upstream's /v2/ at start and then now and then, for /readyz."""

    probe: UpstreamProbe

    def startService(self) -> None:
        super().startService()
        self.probe.start()

    def stopService(self) -> Any:
        super().stopService()
        self.probe.stop()


@define(eq=False)
class _Measure(Service):
    """Counts what the cache holds once at start, off the reactor."""

    store: ICacheStore

    def startService(self) -> None:
        super().startService()
        Deferred.fromCoroutine(self.store.measure()).addErrback(
            lambda f: log.failure("cannot measure the cache", f)
        )
