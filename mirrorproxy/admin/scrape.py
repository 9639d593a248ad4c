"""The running service's cache outcomes, read from its Prometheus endpoint.

`stats` shows the hit ratio since the service started: the
``mirrorproxy_cache_requests_total`` counters (by ``outcome``, summed over
``kind``), parsed with prometheus_client's own exposition parser.  A service
without a metrics listener is normal, so "unreachable" is an answer here,
not an error.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from attrs import frozen
from prometheus_client.parser import text_string_to_metric_families

DEFAULT_METRICS_URL = "http://127.0.0.1:9100/metrics"
TIMEOUT = 3.0
_SAMPLE = "mirrorproxy_cache_requests_total"
# Answers served from what the cache held: fresh, confirmed by a HEAD, or
# stale while upstream failed.  JOIN shared a fetch that was running: one
# upstream fetch for many clients, but not a hit.
HIT_OUTCOMES = ("HIT", "REVALIDATED", "STALE")
OUTCOMES = ("HIT", "REVALIDATED", "STALE", "JOIN", "MISS")
_LIMIT = 16 * 1024 * 1024


class MetricsUnavailable(Exception):
    """The endpoint did not answer with metrics, and why."""


@frozen
class CacheOutcomes:
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def hit_ratio(self) -> float | None:
        if not self.total:
            return None
        return sum(self.counts.get(o, 0) for o in HIT_OUTCOMES) / self.total


def read_outcomes(url: str, timeout: float = TIMEOUT) -> CacheOutcomes:
    return parse_outcomes(_fetch(url, timeout))


def parse_outcomes(text: str) -> CacheOutcomes:
    counts = dict.fromkeys(OUTCOMES, 0)
    found = False
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == _SAMPLE:
                    found = True
                    outcome = sample.labels.get("outcome", "")
                    counts[outcome] = counts.get(outcome, 0) + int(sample.value)
    except ValueError as e:
        raise MetricsUnavailable(f"not Prometheus metrics: {e}") from None
    if not found:
        raise MetricsUnavailable(f"no {_SAMPLE} among the metrics (not a mirrorproxy?)")
    return CacheOutcomes(counts)


def _fetch(url: str, timeout: float) -> str:
    if not url.startswith(("http://", "https://")):
        raise MetricsUnavailable(f"not an http:// or https:// URL: {url!r}")
    # The service is local to the operator; an http_proxy in the environment
    # must not send this request elsewhere.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return str(response.read(_LIMIT).decode("utf-8", "replace"))
    except urllib.error.HTTPError as e:
        raise MetricsUnavailable(f"HTTP {e.code}") from None
    except urllib.error.URLError as e:
        reason = e.reason
        raise MetricsUnavailable(getattr(reason, "strerror", None) or str(reason)) from None
    except (OSError, ValueError) as e:
        raise MetricsUnavailable(str(e) or type(e).__name__) from None
