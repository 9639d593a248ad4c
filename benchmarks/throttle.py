"""A TCP relay on 127.0.0.1 whose downstream bandwidth is one budget shared by
every connection through it: a slow link between a mirror and its upstream.

The harness's ``SlowLink`` paces each connection on its own, so ten
connections there get ten times the bandwidth; a real uplink does not grow
with the number of connections, and that difference is what separates a
mirror that fetches a blob once from one that fetches it per client.

Bytes from the target are sent in chunks; each chunk reserves the link for
``len(chunk) / rate`` seconds after the previous reservation (whichever
connection made it) and is sent when its reservation ends. Reservations are
first come, first served, so busy connections share the link evenly.
"""

from __future__ import annotations

import socket
import threading
import time

from attrs import define, field

CHUNK = 64 * 1024
# Idle time earns no credit beyond this much: a burst after a pause is short.
MAX_BURST_SECONDS = 0.005


@define(eq=False)
class _Budget:
    """The link's schedule: when it is next free."""

    rate: int
    _lock: threading.Lock = field(factory=threading.Lock)
    _free_at: float = 0.0
    relayed: int = 0

    def reserve(self, size: int) -> float:
        """Book ``size`` bytes on the link; the monotonic time they are through."""
        with self._lock:
            now = time.monotonic()
            start = max(self._free_at, now - MAX_BURST_SECONDS)
            self._free_at = start + size / self.rate
            self.relayed += size
            return self._free_at


@define(eq=False)
class SharedLink:
    """Relays 127.0.0.1:``port`` to 127.0.0.1:``target_port``; everything
    coming back from the target shares ``bytes_per_second``."""

    target_port: int
    bytes_per_second: int
    _budget: _Budget = field(init=False)
    _listener: socket.socket = field(init=False)
    _sockets: list[socket.socket] = field(factory=list, init=False)
    _threads: list[threading.Thread] = field(factory=list, init=False)
    _lock: threading.Lock = field(factory=threading.Lock, init=False)
    _stopped: threading.Event = field(factory=threading.Event, init=False)
    connections: int = field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._budget = _Budget(self.bytes_per_second)
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self._spawn(self._accept)

    @property
    def port(self) -> int:
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def relayed(self) -> int:
        """Bytes sent back through the link so far."""
        return self._budget.relayed

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
                self.connections += 1
            self._spawn(self._pump, client, upstream, False)
            self._spawn(self._pump, upstream, client, True)

    def _pump(self, source: socket.socket, sink: socket.socket, paced: bool) -> None:
        try:
            while chunk := source.recv(CHUNK):
                if paced:
                    # Pacing, not synchronisation: wait for our slot on the link.
                    delay = self._budget.reserve(len(chunk)) - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                sink.sendall(chunk)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

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
