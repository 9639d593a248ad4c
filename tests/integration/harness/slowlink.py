"""A TCP relay on 127.0.0.1 that paces the bytes coming back from its target.

Put between the mirror and the upstream, it makes an upstream fetch take a
known minimum time, so a test can be sure its concurrent clients all arrive
while that fetch is still running, however fast loopback is.

By default each connection has ``bytes_per_second`` of its own, so ten
connections get ten times the bandwidth. With ``shared=True`` the rate is one
budget for every connection through the link, as a real uplink is: that is
what the benchmark's throttled link needs, since it separates a mirror that
fetches a blob once from one that fetches it per client.

Bytes from the target are sent in chunks; each chunk reserves its budget for
``len(chunk) / rate`` seconds after the previous reservation (whichever
connection made it) and is sent when its reservation ends. Reservations are
first come, first served, so busy connections on a shared link share it
evenly.
"""

from __future__ import annotations

import socket
import threading
import time

from attrs import define, field

from .tcprelay import CHUNK, TcpRelay

# Idle time earns no credit beyond this much: a burst after a pause (a pooled
# keep-alive connection reused for the next blob, say) is short.
MAX_BURST_SECONDS = 0.005


@define(eq=False)
class _Budget:
    """One pacing schedule: when its share of the link is next free."""

    rate: int
    _lock: threading.Lock = field(factory=threading.Lock)
    _free_at: float = 0.0

    def reserve(self, size: int) -> float:
        """Book ``size`` bytes; the monotonic time they are through."""
        with self._lock:
            now = time.monotonic()
            start = max(self._free_at, now - MAX_BURST_SECONDS)
            self._free_at = start + size / self.rate
            return self._free_at


@define(eq=False)
class SlowLink(TcpRelay):
    """Relays 127.0.0.1:``port`` to 127.0.0.1:``target_port``, holding what
    comes back from the target to ``bytes_per_second``: per connection, or
    for all of them together if ``shared``. As a context manager, it stops
    when the block ends."""

    bytes_per_second: int
    shared: bool = field(default=False, kw_only=True)
    _shared_budget: _Budget = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._shared_budget = _Budget(self.bytes_per_second)
        super().__attrs_post_init__()

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        budget = self._shared_budget if self.shared else _Budget(self.bytes_per_second)
        self._spawn(self._pump, client, upstream, None)
        self._spawn(self._pump, upstream, client, budget)

    def _pump(self, source: socket.socket, sink: socket.socket, budget: _Budget | None) -> None:
        try:
            while chunk := source.recv(CHUNK):
                if budget is not None:
                    # Pacing, not synchronisation: wait for our slot on the link.
                    delay = budget.reserve(len(chunk)) - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                sink.sendall(chunk)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass
