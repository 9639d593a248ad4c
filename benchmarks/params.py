"""The sizes, counts and repetitions of one benchmark run (full or smoke).

Everything a workload needs to know about "how much" lives here, so the two
modes differ in this module only.
"""

from __future__ import annotations

from attrs import frozen

MiB = 1024 * 1024


@frozen
class Params:
    """How much each workload does; the full run follows issue 6."""

    mode: str
    # A link with this total bandwidth, shared by all connections, sits in
    # front of the upstream for the throttled runs of workloads 2, 3 and 5.
    throttle_rate: int = 50 * MiB
    # Workloads 1 (warm) and 5 (cold) read blobs of this size.
    big_blob_size: int = 256 * MiB
    # 1. warm blob throughput
    warm_parallel: int = 8
    warm_single_reps: int = 5
    warm_parallel_reps: int = 3
    # 2. cold pull of one image
    pull_layers: int = 5
    pull_layer_size: int = 40 * MiB
    pull_reps: int = 3
    # 3. thundering herd
    herd_clients: int = 50
    herd_blob_size: int = 128 * MiB
    herd_reps: int = 3
    # 4. manifests with wrk
    wrk_connections: int = 32
    wrk_threads: int = 2
    wrk_seconds: float = 10.0
    wrk_reps: int = 3
    # 5. memory under many cold downloads, some slow
    memory_clients: int = 20
    memory_slow_clients: int = 5
    memory_slow_rate: int = 1 * MiB
    memory_reps: int = 3
    memory_throttled_reps: int = 1
    # 6. upstream economy
    economy_pulls: int = 1000
    economy_ttl: float = 2.0
    economy_windows: int = 5
    # 7. a cluster: herd_blob_size over this many nodes, clients spread
    # evenly; then warm_parallel clients on that blob, warm_*_reps times
    cluster_nodes: int = 3
    cluster_clients: int = 48
    cluster_reps: int = 3
    # The herd again behind the throttled link (the warm half is loopback only).
    cluster_throttled: bool = True
    # The tag TTL every system gets where a workload does not set its own.
    tag_ttl: float = 300.0
    # Whether clients hash what they receive (costs client CPU; smoke only).
    verify_digests: bool = False
    # Upper bound of any one client run, in seconds.
    client_deadline: float = 600.0

    @property
    def memory_fast_clients(self) -> int:
        return self.memory_clients - self.memory_slow_clients


FULL = Params(mode="full")

SMOKE = Params(
    mode="smoke",
    # Faster than the full run's link, so the smoke run stays short.
    throttle_rate=200 * MiB,
    big_blob_size=1 * MiB,
    warm_parallel=8,
    warm_single_reps=1,
    warm_parallel_reps=1,
    pull_layers=5,
    pull_layer_size=64 * 1024,
    pull_reps=1,
    herd_clients=50,
    herd_blob_size=1 * MiB,
    herd_reps=1,
    wrk_connections=8,
    wrk_threads=1,
    wrk_seconds=1.0,
    wrk_reps=1,
    memory_clients=8,
    memory_slow_clients=2,
    memory_slow_rate=1 * MiB,
    memory_reps=1,
    memory_throttled_reps=1,
    economy_pulls=10,
    economy_ttl=1.0,
    economy_windows=1,
    cluster_clients=6,
    cluster_reps=1,
    cluster_throttled=False,
    verify_digests=True,
    client_deadline=60.0,
)
