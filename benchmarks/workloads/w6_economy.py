"""Workload 6: upstream economy. Many pulls of one tag, each the requests
dockerd makes (see ``pullclient``), counted at the upstream: first within
the tag TTL, then with a short TTL and the pulls spread over several TTL
windows. Every system is warmed by one pull first, which is not counted."""

from __future__ import annotations

import math
import time
from collections import Counter

from ..context import Bench, port_of
from ..pullclient import Puller
from ..results import LOOPBACK, LOWER, Results, Target
from ..systems import MIRRORPROXY, MIRRORS

WITHIN = "upstream requests per 1,000 pulls within the TTL"
AFTER = "upstream requests per TTL window, pulls past the TTL"


def _kind(path: str) -> str:
    for kind in ("manifests", "blobs"):
        if f"/{kind}/" in path:
            return kind
    return "ping" if path.rstrip("/") == "/v2" else "other"


def run(bench: Bench, results: Results) -> None:
    p = bench.params
    image = bench.content.small_image
    within = results.figure("6", LOOPBACK, WITHIN, "requests", LOWER)
    after = results.figure("6", LOOPBACK, AFTER, "requests", LOWER)
    for name in MIRRORS:
        with bench.running(name, LOOPBACK, label="w6-within") as system:
            puller = Puller("127.0.0.1", port_of(system.url))
            puller.pull(image.name, image.tag)
            mark = bench.upstream.mark()
            for _ in range(p.economy_pulls):
                puller.pull(image.name, image.tag)
            puller.close()
            asked = bench.upstream.requests(mark)
        within.add(name, len(asked) * 1000 / p.economy_pulls,
                   breakdown=dict(Counter(f"{r.method} {_kind(r.path)}" for r in asked)))
        with bench.running(name, LOOPBACK, tag_ttl=p.economy_ttl, label="w6-after") as system:
            puller = Puller("127.0.0.1", port_of(system.url))
            puller.pull(image.name, image.tag)
            mark = bench.upstream.mark()
            span = p.economy_ttl * p.economy_windows
            started = time.monotonic()
            for i in range(p.economy_pulls):
                # Pacing, not synchronisation: spread the pulls over the windows.
                wait = started + i * span / p.economy_pulls - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                puller.pull(image.name, image.tag)
            elapsed = time.monotonic() - started
            puller.close()
            asked = bench.upstream.requests(mark)
        windows = max(1, math.ceil(elapsed / p.economy_ttl))
        after.add(name, len(asked) / windows, windows=windows, pulls=p.economy_pulls,
                  breakdown=dict(Counter(f"{r.method} {_kind(r.path)}" for r in asked)))
        bench.say(
            f"w6: {name}: {within.samples[name][-1]:.0f} upstream requests per 1000 pulls within "
            f"the TTL; {len(asked)} in {windows} windows after it"
        )


def targets(results: Results) -> list[Target]:
    return [
        Target("6", LOOPBACK, "within the TTL: 0 upstream requests per 1,000 pulls",
               results.find("6", LOOPBACK, WITHIN).value(MIRRORPROXY), 0, "<="),
        Target("6", LOOPBACK, "past the TTL: at most 1 upstream request (a HEAD) per TTL window",
               results.find("6", LOOPBACK, AFTER).value(MIRRORPROXY), 1.0, "<="),
    ]
