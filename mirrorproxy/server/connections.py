"""Which client connections the mirror takes, and how many it holds.

Every connection costs a file descriptor, and one more while a blob streams
to it; past the process's limit nothing works (no cache file opens, no
upstream socket).  So the mirror holds at most `max_connections`, by default
what its descriptor limit leaves room for, and decides at accept:

- a client outside the allowed networks (``--allow``) is closed at once,
  before it can send a byte;
- at the limit, the connection idle the longest (a keep-alive between
  requests, or one that never sent anything) is closed to make room, as a
  client must expect of any idle connection; only when every connection is
  busy is the newcomer closed at once.

Refusals are counted by reason and logged at most once a minute, so a flood
cannot flood the log too.
"""

from __future__ import annotations

import resource
from collections import Counter, OrderedDict
from typing import Any

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..common.networks import Network, peer_address

log = Logger()

# Descriptors kept for everything that is not a client connection: listeners,
# logs, the thread pools' work, upstream sockets, spool files.
RESERVED_DESCRIPTORS = 64
# A client connection's socket, and the file it is being sent.
DESCRIPTORS_PER_CONNECTION = 2
MIN_CONNECTIONS = 16
REFUSAL_LOG_INTERVAL = 60.0


def descriptor_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def default_max_connections(fd_limit: int) -> int:
    """As many connections as the descriptor limit leaves room for."""
    return max(MIN_CONNECTIONS, (fd_limit - RESERVED_DESCRIPTORS) // DESCRIPTORS_PER_CONNECTION)


@define(eq=False)
class ConnectionGate:
    """Admits, counts and reclaims the client connections of one site."""

    _clock: IReactorTime
    max_connections: int
    networks: tuple[Network, ...] = ()
    open: int = 0
    # Connections closed at accept, by why: "network", "limit".
    refused: Counter[str] = field(factory=Counter)
    # Idle connections closed to make room for new ones.
    reclaimed: int = 0
    # Connections with nothing under way, the longest idle first.
    _idle: OrderedDict[Any, None] = field(factory=OrderedDict)
    _logged_at: float = float("-inf")
    _unlogged: Counter[str] = field(factory=Counter)

    def admit(self, peer: object) -> bool:
        """Whether to take a connection from `peer` (a UNIX socket's peer
        has no address: the socket's permissions let it in)."""
        address = peer_address(peer)
        if self.networks and address is not None and not any(address in n for n in self.networks):
            self._refuse("network", address)
            return False
        if self.open >= self.max_connections:
            if not self._idle:
                self._refuse("limit", address)
                return False
            oldest, _ = self._idle.popitem(last=False)
            self.reclaimed += 1
            oldest.transport.loseConnection()
        return True

    def opened(self, channel: Any) -> None:
        self.open += 1
        self.idle(channel)

    def idle(self, channel: Any) -> None:
        self._idle[channel] = None
        self._idle.move_to_end(channel)

    def busy(self, channel: Any) -> None:
        self._idle.pop(channel, None)

    def closed(self, channel: Any) -> None:
        self.open -= 1
        self._idle.pop(channel, None)

    def _refuse(self, reason: str, address: object) -> None:
        self.refused[reason] += 1
        self._unlogged[reason] += 1
        now = self._clock.seconds()
        if now - self._logged_at < REFUSAL_LOG_INTERVAL:
            return
        self._logged_at = now
        counts, self._unlogged = self._unlogged, Counter()
        log.warn(
            "closed new connections at once since the last such message: {limit_count} with "
            "{open} open of {limit} (--max-connections) and none idle, {network_count} from "
            "networks not allowed (--allow); the latest from {client}",
            open=self.open,
            limit=self.max_connections,
            limit_count=counts["limit"],
            network_count=counts["network"],
            client=str(address) if address is not None else "-",
        )
