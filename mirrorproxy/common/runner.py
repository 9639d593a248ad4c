"""How blocking work is run away from the reactor thread."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred

# Runs a blocking callable away from the reactor thread (in the service, a
# thread pool; in unit tests, inline or when the test says); fires with its
# result.
Runner = Callable[..., Deferred[Any]]
