"""Which upstream's mirror a request is for.

Requests are routed by containerd's ``?ns=`` to the mirror of one upstream
registry; a registry that is not configured is ``NAME_UNKNOWN``.
"""

from __future__ import annotations

from attrs import define

from ..cache.registrycache import RegistryCache
from .errors import NAME_UNKNOWN, RegistryError


@define(eq=False)
class Router:
    _mirrors: list[RegistryCache]

    def route(self, namespace: str | None) -> RegistryCache:
        if namespace is None:
            return self._mirrors[0]
        for mirror in self._mirrors:
            if mirror.registry.namespace == namespace.lower():
                return mirror
        raise RegistryError(404, NAME_UNKNOWN, f"this mirror does not serve registry {namespace!r}")
