"""A TCP relay on 127.0.0.1 that paces the bytes coming back from its target.

Put between the mirror and the upstream, it makes an upstream fetch take a
known minimum time, so a test can be sure its concurrent clients all arrive
while that fetch is still running, however fast loopback is.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Self

from attrs import define, field

CHUNK = 64 * 1024


@define(eq=False)
class SlowLink:
    """Relays 127.0.0.1:``port`` to ``target_port``; each connection's
    downstream direction is held to ``bytes_per_second``. As a context
    manager, it stops when the block ends."""

    target_port: int
    bytes_per_second: int
    _listener: socket.socket = field(init=False)
    _sockets: list[socket.socket] = field(factory=list, init=False)
    _threads: list[threading.Thread] = field(factory=list, init=False)
    _lock: threading.Lock = field(factory=threading.Lock, init=False)
    _stopped: threading.Event = field(factory=threading.Event, init=False)

    def __attrs_post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
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
            with self._lock:
                self._sockets += [client, upstream]
            self._spawn(self._pump, client, upstream, None)
            self._spawn(self._pump, upstream, client, self.bytes_per_second)

    def _pump(self, source: socket.socket, sink: socket.socket, rate: int | None) -> None:
        started, sent = time.monotonic(), 0
        try:
            while chunk := source.recv(CHUNK):
                sink.sendall(chunk)
                sent += len(chunk)
                if rate:
                    # Pacing, not synchronisation: hold the average rate.
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
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
