"""Workload 7: a cluster of nodes sharing one bucket (SeaweedFS) and one Redis.

(a) The herd across the nodes: many clients, spread evenly over three cold
nodes on a new bucket, GET one cold blob at once; and, for comparison in the
same conditions, the same clients on one ordinary node (workload 3's herd).
The node that fetched from upstream (the filling node) is read from each
node's metrics; the others' clients follow it through the peer endpoint.

(b) Warm, on the last loopback herd's cluster (the blob in the bucket and
in the nodes' own tiers): one client, then several at once, fetch it through
a node (a HIT, sent with sendfile) and through a node that joins the cluster
with ``--blob-redirect presigned`` (a 307 the client follows to the bucket,
with no credentials).

Repetitions take turns between what is compared, so the machine's noise
spreads over both.
"""

from __future__ import annotations

import http.client
import statistics
import time
from contextlib import ExitStack

from ..cluster import Backends, Node, Nodes
from ..content import BlobRef
from ..context import Bench, CpuMeter, SystemKilled, port_of
from ..loadclient import ClientResult, ClientSpec, RunResult, run_clients
from ..params import MiB
from ..results import HIGHER, LOOPBACK, LOWER, THROTTLED, Figure, Results, Target
from ..systems import MIRRORPROXY
from .w3_herd import upstream_fetches

ONE_NODE, NODES = "1 node", "3 nodes"
SENDFILE, PRESIGNED = "node (HIT, sendfile)", "presigned 307 to the bucket"
HERD_SYSTEMS = (ONE_NODE, NODES)
WARM_SYSTEMS = (SENDFILE, PRESIGNED)

GETS = "cluster herd: upstream GETs"
FILLER_TTFB_MEDIAN = "cluster herd: TTFB on the filling node, median"
FILLER_TTFB_MAX = "cluster herd: TTFB on the filling node, max"
OTHERS_TTFB_MEDIAN = "cluster herd: TTFB on the other nodes, median"
OTHERS_TTFB_MAX = "cluster herd: TTFB on the other nodes, max"
WALL = "cluster herd: wall time"
WARM_ONE = "cluster warm: one client"
WARM_PARALLEL = "cluster warm: {n} clients in parallel, aggregate"

UPLOAD_TIMEOUT = 120.0


def systems_of(metric: str) -> tuple[str, ...]:
    """Which systems a workload 7 figure compares."""
    return WARM_SYSTEMS if metric.startswith("cluster warm") else HERD_SYSTEMS


def run(bench: Bench, results: Results) -> None:
    p = bench.params
    blob = bench.content.herd_blob
    variants = (LOOPBACK, THROTTLED) if p.cluster_throttled else (LOOPBACK,)
    with Backends.running(bench.tools, bench.work_dir / "w7") as backends:
        for variant in variants:
            for rep in range(p.cluster_reps):
                # The one node first in the first rep: the tables' order.
                one_first = rep % 2 == 0
                if one_first:
                    _herd_one_node(bench, results, blob, variant, rep)
                warm = variant == LOOPBACK and rep == p.cluster_reps - 1
                _herd_nodes(bench, results, backends, blob, variant, rep, warm)
                if not one_first:
                    _herd_one_node(bench, results, blob, variant, rep)


def _figures(results: Results, variant: str) -> dict[str, Figure]:
    return {m: results.figure("7", variant, m, u, LOWER) for m, u in (
        (GETS, "GETs"), (FILLER_TTFB_MEDIAN, "ms"), (FILLER_TTFB_MAX, "ms"),
        (OTHERS_TTFB_MEDIAN, "ms"), (OTHERS_TTFB_MAX, "ms"), (WALL, "s"),
    )}


def _check(what: str, got: RunResult) -> None:
    if got.failures():
        raise RuntimeError(f"w7: {what}: {len(got.failures())} clients failed: {got.failures()[0]}")


def _ttfbs_ms(clients: list[ClientResult]) -> list[float]:
    return [c.ttfb * 1000 for c in clients if c.ttfb is not None]


def _herd_one_node(bench: Bench, results: Results, blob: BlobRef, variant: str, rep: int) -> None:
    p = bench.params
    fig = _figures(results, variant)
    spec = ClientSpec(blob.path, None, blob.size, blob.digest)
    with bench.running(MIRRORPROXY, variant, label=f"w7-herd-one-{variant}") as system:
        mark = bench.upstream.mark()
        with CpuMeter(system.pids()) as cpu:
            herd = run_clients("127.0.0.1", port_of(system.url), [spec] * p.cluster_clients,
                               p.client_deadline, verify=p.verify_digests)
        _check(f"{variant} herd on one node", herd)
        gets = upstream_fetches(bench.upstream, blob, mark)
    ttfbs = _ttfbs_ms(list(herd.clients))
    fig[GETS].add(ONE_NODE, gets)
    fig[FILLER_TTFB_MEDIAN].add(ONE_NODE, statistics.median(ttfbs))
    fig[FILLER_TTFB_MAX].add(ONE_NODE, max(ttfbs))
    fig[WALL].add(ONE_NODE, herd.wall, cores=cpu.cores)
    bench.say(
        f"w7 {variant}: rep {rep + 1} one node: {gets} GETs, TTFB median {statistics.median(ttfbs):.0f} ms "
        f"max {max(ttfbs):.0f} ms, wall {herd.wall:.2f}s; cores {cpu.cores:.2f}"
    )


def _herd_nodes(
    bench: Bench, results: Results, backends: Backends, blob: BlobRef, variant: str, rep: int, warm: bool
) -> None:
    """The herd on a new cluster; then, if ``warm``, the warm half on it."""
    p = bench.params
    fig = _figures(results, variant)
    with backends.cluster(bench.upstream_url(variant), p.tag_ttl, p.cluster_nodes) as cluster:
        nodes = list(cluster.nodes)
        specs = [ClientSpec(blob.path, None, blob.size, blob.digest, port=nodes[i % len(nodes)].port)
                 for i in range(p.cluster_clients)]
        mark = bench.upstream.mark()
        meters = [CpuMeter([n.mirror.process.pid]) for n in nodes]
        with ExitStack() as stack, CpuMeter(backends.store_pids()) as store:
            for meter in meters:
                stack.enter_context(meter)
            herd = run_clients("127.0.0.1", nodes[0].port, specs, p.client_deadline, verify=p.verify_digests)
        _ensure_alive(backends, nodes)
        _check(f"{variant} herd on {len(nodes)} nodes", herd)
        gets = upstream_fetches(bench.upstream, blob, mark)
        fillers = {n.port for n in nodes if n.upstream_blob_gets() > 0}
        cores = {
            "filling_node_cores": sum(m.cores for n, m in zip(nodes, meters) if n.port in fillers),
            "other_nodes_cores": sum(m.cores for n, m in zip(nodes, meters) if n.port not in fillers),
            "seaweedfs_cores": store.cores,
        }
        _record(bench, fig, variant, rep, herd, specs, gets, fillers, cores)
        if warm:
            _warm(bench, results, backends, cluster, blob)


def _record(
    bench: Bench, fig: dict[str, Figure], variant: str, rep: int,
    herd: RunResult, specs: list[ClientSpec], gets: int, fillers: set[int | None], cores: dict[str, float],
) -> None:
    if not fillers:
        raise RuntimeError(f"w7: {variant}: no node says it fetched the blob from upstream ({gets} GETs seen)")
    on_filler = _ttfbs_ms([c for c, s in zip(herd.clients, specs) if s.port in fillers])
    on_others = _ttfbs_ms([c for c, s in zip(herd.clients, specs) if s.port not in fillers])
    fig[GETS].add(NODES, gets, filling_nodes=len(fillers))
    fig[FILLER_TTFB_MEDIAN].add(NODES, statistics.median(on_filler))
    fig[FILLER_TTFB_MAX].add(NODES, max(on_filler))
    if on_others:
        fig[OTHERS_TTFB_MEDIAN].add(NODES, statistics.median(on_others))
        fig[OTHERS_TTFB_MAX].add(NODES, max(on_others))
    fig[WALL].add(NODES, herd.wall, cores=round(sum(cores.values()), 2), **cores)
    others = f"{statistics.median(on_others):.0f}/{max(on_others):.0f} ms" if on_others else "-"
    bench.say(
        f"w7 {variant}: rep {rep + 1} {NODES}: {gets} GETs ({len(fillers)} filling), TTFB "
        f"median/max on the filler {statistics.median(on_filler):.0f}/{max(on_filler):.0f} ms, "
        f"on the others {others}, wall {herd.wall:.2f}s; cores: "
        + ", ".join(f"{k.removesuffix('_cores')} {v:.2f}" for k, v in cores.items())
    )


def _ensure_alive(backends: Backends, nodes: list[Node]) -> None:
    if not backends.alive():
        raise SystemKilled("SeaweedFS or redis-server was stopped from outside during the measurement")
    if not all(n.mirror.process.running() for n in nodes):
        raise SystemKilled("a cluster node was stopped from outside during the measurement")


def _warm(bench: Bench, results: Results, backends: Backends, cluster: Nodes, blob: BlobRef) -> None:
    p = bench.params
    one = results.figure("7", LOOPBACK, WARM_ONE, "MiB/s", HIGHER)
    many = results.figure("7", LOOPBACK, WARM_PARALLEL.format(n=p.warm_parallel), "MiB/s", HIGHER)
    plain = cluster.nodes[0]
    (redirecting,) = cluster.add(("--blob-redirect", "presigned"))
    spec = ClientSpec(blob.path, None, blob.size, blob.digest)
    # Already a HIT if this node kept the herd's copy; else it takes one.
    _check("warming", run_clients("127.0.0.1", plain.port, [spec], p.client_deadline, verify=True))
    _wait_for_redirect(redirecting, blob)
    systems = {
        SENDFILE: (plain, spec, "HIT", False),
        PRESIGNED: (redirecting, ClientSpec(blob.path, None, blob.size, blob.digest, follow_redirect=True),
                    "REDIRECT", True),
    }
    for rep in range(max(p.warm_single_reps, p.warm_parallel_reps)):
        said = []
        for name, (node, client, outcome, redirected) in systems.items():
            for figure, count, reps in ((one, 1, p.warm_single_reps), (many, p.warm_parallel, p.warm_parallel_reps)):
                if rep >= reps:
                    continue
                with CpuMeter([node.mirror.process.pid]) as node_cpu, CpuMeter(backends.store_pids()) as store_cpu:
                    got = run_clients("127.0.0.1", node.port, [client] * count, p.client_deadline,
                                      verify=p.verify_digests)
                _check(f"warm {name}", got)
                seen = {(c.cache, c.redirected) for c in got.clients}
                if seen != {(outcome, redirected)}:
                    raise RuntimeError(f"w7: warm {name}: expected X-Cache {outcome}, saw {seen}")
                figure.add(name, count * blob.size / MiB / got.wall,
                           node_cores=node_cpu.cores, store_cores=store_cpu.cores)
                said.append(f"{name} x{count} {count * blob.size / MiB / got.wall:.0f} MiB/s")
        _ensure_alive(backends, [plain, redirecting])
        bench.say(f"w7 warm: rep {rep + 1}: " + "; ".join(said))


def _wait_for_redirect(node: Node, blob: BlobRef) -> None:
    """Until the node answers the blob with a 307: the upload to the bucket
    runs after the fill's commit."""
    deadline = time.monotonic() + UPLOAD_TIMEOUT
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
        try:
            connection.request("GET", blob.path)
            if connection.getresponse().status == 307:
                return
        finally:
            connection.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"w7: the blob was not in the bucket {UPLOAD_TIMEOUT:.0f}s after its fill")
        time.sleep(0.5)


def targets(results: Results) -> list[Target]:
    found = []
    for variant in (LOOPBACK, THROTTLED):
        try:
            gets = results.find("7", variant, GETS).value(NODES)
        except KeyError:
            continue
        others_max = results.find("7", variant, OTHERS_TTFB_MAX).value(NODES)
        one_max = results.find("7", variant, FILLER_TTFB_MAX).value(ONE_NODE)
        wall = results.find("7", variant, WALL)
        nodes_wall, one_wall = wall.value(NODES), wall.value(ONE_NODE)
        found += [
            Target("7", variant, "3 nodes: upstream GETs = 1", gets, 1, "<="),
            Target("7", variant, "3 nodes: max TTFB on the other nodes / 1 node's max TTFB <= 2",
                   others_max / one_max if others_max and one_max else None, 2.0, "<=",
                   f"{others_max:.0f} ms / {one_max:.0f} ms" if others_max and one_max else ""),
            Target("7", variant, "3 nodes: wall / 1 node's wall <= 1.3",
                   nodes_wall / one_wall if nodes_wall and one_wall else None, 1.3, "<=",
                   f"{nodes_wall:.2f} s / {one_wall:.2f} s" if nodes_wall and one_wall else ""),
        ]
    return found
