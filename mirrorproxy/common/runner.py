"""How blocking work is run away from the reactor thread."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

# Runs a blocking callable away from the reactor thread (in the service, a
# thread pool; in unit tests, inline or when the test says); returns its result.
Runner = Callable[..., Awaitable[Any]]
