"""A blob download in a thread of its own, watched as it goes: how much has
come so far and when each chunk came, so a test can act mid-transfer (kill
the node it comes from) and measure the pause a client saw."""

from __future__ import annotations

import hashlib
import threading
import time

from attrs import define, field

from .fetching import FETCH_TIMEOUT, Received
from .mirror import Mirror
from .processes import POLL_INTERVAL

CHUNK = 64 * 1024


@define(eq=False)
class Download:
    node: Mirror
    path: str
    # (monotonic time, bytes so far) after each chunk.
    arrivals: list[tuple[float, int]] = field(factory=list)
    _result: Received | BaseException | None = None
    _thread: threading.Thread | None = None

    @classmethod
    def start(cls, node: Mirror, path: str) -> Download:
        download = cls(node, path)
        download._thread = threading.Thread(target=download._run, daemon=True)
        download._thread.start()
        return download

    def _run(self) -> None:
        try:
            connection = self.node.connection(FETCH_TIMEOUT)
            try:
                connection.request("GET", self.path)
                response = connection.getresponse()
                hasher, length = hashlib.sha256(), 0
                while chunk := response.read1(CHUNK):
                    hasher.update(chunk)
                    length += len(chunk)
                    self.arrivals.append((time.monotonic(), length))
                self._result = Received(response.status, length, "sha256:" + hasher.hexdigest())
            finally:
                connection.close()
        except BaseException as e:
            self._result = e

    @property
    def received(self) -> int:
        return self.arrivals[-1][1] if self.arrivals else 0

    def wait_for(self, size: int, timeout: float = 30.0) -> None:
        """Until at least ``size`` bytes have come."""
        deadline = time.monotonic() + timeout
        while self.received < size:
            if self._result is not None:
                raise AssertionError(f"download over after {self.received} bytes: {self._result!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.received} of {size} bytes within {timeout}s")
            time.sleep(POLL_INTERVAL)

    def result(self, timeout: float = FETCH_TIMEOUT) -> Received:
        assert self._thread is not None
        self._thread.join(timeout)
        if isinstance(self._result, BaseException):
            raise self._result
        assert self._result is not None, f"still downloading after {timeout}s"
        return self._result

    def longest_pause_after(self, moment: float) -> float:
        """The longest wait between chunks from ``moment`` on (counting from
        ``moment`` itself to the first chunk after it)."""
        times = [moment, *(t for t, _ in self.arrivals if t > moment)]
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)
