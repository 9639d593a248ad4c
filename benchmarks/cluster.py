"""Workload 7's systems: one SeaweedFS (a real S3 server) and one
redis-server for the whole workload, and clusters of mirrorproxy nodes,
each cluster on a new bucket of its own (so that it starts cold), its nodes
coordinated through that Redis.

Nodes are configured as an operator would (the harness's `Cluster`: a
config file each with the bucket's keys, ``--advertise`` on its own port)
and each gets a metrics listener, from which the benchmark reads which node
fetched the blob from upstream.
"""

from __future__ import annotations

import re
import shutil
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from attrs import define, field

from tests.integration.harness.cluster import Cluster
from tests.integration.harness.mirror import Mirror
from tests.integration.harness.processes import free_port
from tests.integration.harness.redisserver import RedisServer, answers_ping
from tests.integration.harness.seaweedfs import SeaweedFS

from .systems import Tools

# Upstream blob GETs that answered with content, from a node's /metrics.
_UPSTREAM_BLOB_GETS = re.compile(
    r'^mirrorproxy_upstream_requests_total\{(?=[^}]*method="GET")(?=[^}]*kind="blob")'
    r'(?=[^}]*status="20[06]")[^}]*\}\s+([0-9.e+]+)$',
    re.MULTILINE,
)


@define(eq=False)
class Node:
    mirror: Mirror
    metrics_port: int

    @property
    def port(self) -> int:
        return self.mirror.port

    def upstream_blob_gets(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        return round(sum(float(count) for count in _UPSTREAM_BLOB_GETS.findall(text)))


@define(eq=False)
class Backends:
    """The bucket's server and Redis, shared by every cluster of the workload."""

    seaweedfs: SeaweedFS
    redis: RedisServer
    directory: Path
    _clusters: int = 0

    @classmethod
    @contextmanager
    def running(cls, tools: Tools, directory: Path) -> Iterator[Backends]:
        """Both servers for the length of a ``with`` block, stopped after."""
        seaweedfs = SeaweedFS.start(tools.weed, directory / "seaweedfs")
        try:
            redis = RedisServer.start(tools.redis, directory / "redis")
            try:
                yield cls(seaweedfs, redis, directory)
            finally:
                redis.stop()
        finally:
            seaweedfs.stop()

    def store_pids(self) -> list[int]:
        return [self.seaweedfs.process.pid]

    def alive(self) -> bool:
        return self.seaweedfs.process.running() and answers_ping(self.redis.port)

    @contextmanager
    def cluster(self, upstream_url: str, tag_ttl: float, nodes: int) -> Iterator[Nodes]:
        """``nodes`` nodes on a new, empty bucket, started together; more may
        join (`Nodes.add`). All stopped, and the bucket emptied, after."""
        self._clusters += 1
        directory = self.directory / f"cluster-{self._clusters:02d}"
        directory.mkdir(parents=True)
        cluster = Cluster.empty(self.seaweedfs.service, self.redis, directory, _unused_factory)
        started = Nodes(cluster, upstream_url, tag_ttl)
        try:
            started.add(*[()] * nodes)
            yield started
        finally:
            started.stop()


@define(eq=False)
class Nodes:
    """The nodes of one cluster (one bucket)."""

    _cluster: Cluster
    _upstream_url: str
    _tag_ttl: float
    nodes: list[Node] = field(factory=list)

    def add(self, *node_options: Sequence[str]) -> list[Node]:
        """New nodes, one per entry of ``node_options``, started together."""
        with ThreadPoolExecutor(len(node_options)) as pool:
            return list(pool.map(self._start, node_options))

    def _start(self, options: Sequence[str]) -> Node:
        port, metrics_port = free_port(), free_port()
        directory = self._cluster.directory
        mirror = Mirror.start(
            self._upstream_url,
            directory / f"cache-{port}",
            directory / f"node-{port}.log",
            tag_ttl=self._tag_ttl,  # type: ignore[arg-type]
            port=port,
            options=[
                "--config", str(self._cluster.config(port)),
                "--metrics-listen", f"tcp:{metrics_port}:interface=127.0.0.1",
                *options,
            ],
        )
        node = Node(mirror, metrics_port)
        self.nodes.append(node)
        return node

    def stop(self) -> None:
        """Stop every node (together), then delete what they stored."""
        errors: list[str] = []

        def stop(node: Node) -> None:
            try:
                node.mirror.stop()
            except RuntimeError as e:
                errors.append(str(e))

        if self.nodes:
            with ThreadPoolExecutor(len(self.nodes)) as pool:
                list(pool.map(stop, self.nodes))
        try:
            _empty(self._cluster)
        finally:
            for node in self.nodes:
                shutil.rmtree(node.mirror.cache_dir, ignore_errors=True)
        if errors:
            raise RuntimeError("; ".join(errors))


def _unused_factory(**_: object) -> Mirror:
    raise AssertionError("the benchmark starts its nodes itself")


def _empty(cluster: Cluster) -> None:
    """Delete the bucket's objects: the blobs are big, the disk is not."""
    client = cluster.s3.client()
    listed = client.list_objects_v2(Bucket=cluster.bucket)
    for entry in listed.get("Contents", []):
        client.delete_object(Bucket=cluster.bucket, Key=entry["Key"])
