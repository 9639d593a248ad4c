"""Building a cluster node's shared parts from its settings: the bucket
behind the local tier, the Redis coordination, the client for peers."""

from __future__ import annotations

import os
import uuid
from typing import Any

import botocore.session  # type: ignore[import-untyped]
from attrs import define
from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool

from ..cache.cluster.node import ClusterNode
from ..cache.cluster.store import TieredStore
from ..cluster.coordination import Coordination
from ..cluster.keys import KeySpace, Node
from ..common.runner import Runner
from ..storage.filesystem import FilesystemStore
from ..storage.s3.store import S3Store
from .clustersettings import ClusterSettings

log = Logger()


@define(eq=False)
class Shared:
    store: TieredStore
    node: ClusterNode
    coordination: Coordination | None
    # The bucket's and the peers' connections, closed when the service stops.
    connections: HTTPConnectionPool


def build_shared(cluster: ClusterSettings, cache_dir: str, reactor: Any, run: Runner) -> Shared:
    assert cluster.storage is not None
    session = botocore.session.get_session()
    if cluster.keys is not None and not os.environ.get("AWS_ACCESS_KEY_ID"):
        # The config file's keys; the environment's win (the AWS way).
        session.set_credentials(cluster.keys.access_key_id, cluster.keys.secret_access_key)
    connections = HTTPConnectionPool(reactor, persistent=True)
    connections.maxPersistentPerHost = 16
    http = HTTPClient(Agent(reactor, pool=connections, connectTimeout=10))
    bucket = S3Store.open(session, cluster.endpoint, cluster.storage, cache_dir, run, http, reactor)
    coordination = None
    node_id = cluster.advertise or f"node-{uuid.uuid4().hex[:8]}"
    if cluster.redis is not None:
        assert cluster.advertise is not None
        keys = KeySpace(cluster.redis_prefix)
        coordination = Coordination.build(reactor, cluster.redis, Node(node_id, cluster.advertise), keys)
    store = TieredStore(FilesystemStore(cache_dir, run), bucket, coordination.tags if coordination else None)
    node = ClusterNode(bucket, coordination, http, node_id, reactor, redirect=cluster.blob_redirect)
    log.info(
        "sharing the cache in {storage} at {endpoint}{redis}",
        storage=str(cluster.storage),
        endpoint=cluster.endpoint.url or "AWS",
        redis=f", coordinated through {cluster.redis.display()} as {node_id}" if cluster.redis else "",
    )
    return Shared(store, node, coordination, connections)


@define(eq=False)
class CoordinationService(Service):
    coordination: Coordination

    def startService(self) -> None:
        super().startService()
        self.coordination.start()

    def stopService(self) -> Any:
        super().stopService()
        return self.coordination.stop()
