"""What a node started with ``--log-format json`` says in its log: its
access events (one per response) and its other events' text, read back for
counting; and waiting, with a deadline, for a node to say something again
(Redis found back, say)."""

from __future__ import annotations

import json
import time
from typing import Any

from attrs import frozen

from .mirror import Mirror
from .processes import POLL_INTERVAL

ACCESS = "mirrorproxy.access"
# Where a node logs that Redis answers it: once when it first connects
# ("... answers"), once each time Redis comes back ("... answers again").
REDIS_HEALTH = "mirrorproxy.cluster.health"


@frozen
class Access:
    method: str
    path: str
    status: int
    cache: str
    bytes: int


def events(node: Mirror) -> list[dict[str, Any]]:
    found = []
    for line in node.process.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue  # a line being written as we read
    return found


def accesses(node: Mirror, since: int = 0) -> list[Access]:
    """The node's responses, oldest first, from the ``since``-th on."""
    answered = [e for e in events(node) if e.get("namespace") == ACCESS]
    return [
        Access(str(e["method"]), str(e["path"]), int(e["status"]), str(e["cache"]), int(e["bytes"] or 0))
        for e in answered[since:]
    ]


def said(node: Mirror, text: str, namespace: str | None = None) -> int:
    """How many of the node's events (of `namespace`, if given) say ``text``."""
    return sum(
        1
        for e in events(node)
        if text in str(e.get("text", "")) and namespace in (None, e.get("namespace"))
    )


def redis_answered(node: Mirror) -> int:
    """How often the node found Redis answering (at start, and after each outage)."""
    return said(node, " answers", REDIS_HEALTH)


def wait_until_redis_answered(node: Mirror, times: int, timeout: float = 20.0) -> None:
    wait_until(node, lambda: redis_answered(node) >= times, f"find Redis answering {times} times", timeout)


def wait_until(node: Mirror, done: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{node.url} did not {what} within {timeout}s")
        time.sleep(POLL_INTERVAL)
