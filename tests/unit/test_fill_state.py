"""A fill's lifecycle and its failure kinds: the kinds are the metric's
``reason`` labels, so their values are what dashboards query."""

from __future__ import annotations

from collections import Counter

from mirrorproxy.cache.fill.state import FailureKind, FillState


def test_only_a_verified_or_committed_fill_lets_followers_end():
    assert {s for s in FillState if s.verified} == {FillState.VERIFIED, FillState.COMMITTED}


def test_failure_kinds_are_the_metric_labels():
    assert sorted(FailureKind) == ["digest", "disk", "length", "upstream"]


def test_failures_counted_by_kind_are_found_by_label():
    failures: Counter[FailureKind] = Counter({FailureKind.DISK: 2, FailureKind.DIGEST: 1})

    assert failures == {"disk": 2, "digest": 1}
    assert [failures[label] for label in ("digest", "length", "upstream", "disk")] == [1, 0, 0, 2]
