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
from typing import Self

from attrs import define, field

CHUNK = 64 * 1024
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
class SlowLink:
    """Relays 127.0.0.1:``port`` to 127.0.0.1:``target_port``, holding what
    comes back from the target to ``bytes_per_second``: per connection, or
    for all of them together if ``shared``. As a context manager, it stops
    when the block ends."""

    target_port: int
    bytes_per_second: int
    shared: bool = field(default=False, kw_only=True)
    _shared_budget: _Budget = field(init=False)
    _listener: socket.socket = field(init=False)
    _sockets: list[socket.socket] = field(factory=list, init=False)
    _threads: list[threading.Thread] = field(factory=list, init=False)
    _lock: threading.Lock = field(factory=threading.Lock, init=False)
    _stopped: threading.Event = field(factory=threading.Event, init=False)

    def __attrs_post_init__(self) -> None:
        self._shared_budget = _Budget(self.bytes_per_second)
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self._spawn(self._accept)

    @property
    def port(self) -> int:
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, upstream]
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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopped.set()
        # shutdown() wakes the thread blocked in accept(); close() alone
        # does not on Linux.
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in threads:
            thread.join(timeout=5)
