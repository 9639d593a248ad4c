"""A network namespace, for tests that must show a route is the only one.

`NetworkNamespace` owns one named namespace (``ip netns add``) whose only
interface is its own loopback, up: a process run in it (`command` prefixes a
command line) reaches nothing of the host, not even the host's 127.0.0.1.
Tests then open exactly the routes they mean with bridges, and nothing else
exists.

A `Bridge` joins a port of 127.0.0.1 inside the namespace to one of the
host's 127.0.0.1 through a Unix socket (the file system is shared between
network namespaces; abstract Unix sockets are not, so the socket is a file):
two `relay` processes, one each side.  Each bridge keeps the port number the
same on both sides, so a URL naming ``127.0.0.1:PORT`` means the same service
inside and out:

- `bridge_in(port)`: a host service (a proxy) reachable from inside;
- `bridge_out()`: a free host port relayed to the same port inside, where a
  service in the namespace (a mirror) is to listen.

`reaches(port)` tries a TCP connection from inside; `holds(pid)` says
whether a process runs in the namespace.  Closing the namespace stops its
bridges and deletes it; `open_namespace` does that however its block ends.
Traffic stays on loopback: the relays connect to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from attrs import define, field

from .processes import Process

START_TIMEOUT = 15.0
COMMAND_TIMEOUT = 30.0
RELAY = Path(__file__).with_name("relay.py")
NAME_PREFIX = "mirrorproxy-test-"


def ip(*args: str) -> None:
    """``ip ARGS``; RuntimeError with ip's message if it fails."""
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")


@define(eq=False)
class Bridge:
    """127.0.0.1:`port` inside the namespace <-> 127.0.0.1:`port` outside."""

    port: int
    inside: Process
    outside: Process

    def stop(self) -> None:
        """Stop both relays (again: a no-op)."""
        self.inside.stop()
        self.outside.stop()


@define(eq=False)
class NetworkNamespace:
    name: str
    # The Unix sockets' directory: a short one of tempfile's, since a socket's
    # path holds at most 107 bytes and pytest's directories can be longer.
    sockets: Path
    # The relays' logs (and ready lines), kept after the namespace is gone.
    logs: Path
    _bridges: list[Bridge] = field(factory=list)

    @classmethod
    def create(cls, logs: Path) -> NetworkNamespace:
        """A new namespace with a unique name, its loopback up; the relays
        of its bridges will log in ``logs``."""
        logs.mkdir(parents=True, exist_ok=True)
        name = NAME_PREFIX + secrets.token_hex(4)
        ip("netns", "add", name)
        try:
            ip("-n", name, "link", "set", "lo", "up")
            sockets = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        except BaseException:
            ip("netns", "delete", name)
            raise
        return cls(name, sockets, logs)

    @property
    def command(self) -> list[str]:
        """The prefix that runs a command line in the namespace.

        ``ip netns exec`` execs the command (its pid is the command's, so
        signals reach it) after joining the namespace, in a mount namespace
        of its own that shares every file system but ``/sys``.
        """
        return ["ip", "netns", "exec", self.name]

    def bridge_in(self, port: int) -> Bridge:
        """127.0.0.1:``port`` inside relays to 127.0.0.1:``port`` on the host."""
        path = self._socket_path()
        outside, _ = self._relay("outside", f"unix:{path}", f"tcp:{port}")
        try:
            inside, _ = self._relay("inside", f"tcp:{port}", f"unix:{path}", inside=True)
        except BaseException:
            outside.stop()
            raise
        return self._keep(Bridge(port, inside, outside))

    def bridge_out(self) -> Bridge:
        """A free port of the host's 127.0.0.1 that relays to the same port
        inside; the service inside may start listening on it later (until
        then a connection through the bridge is accepted, then dropped)."""
        path = self._socket_path()
        outside, ready = self._relay("outside", "tcp:0", f"unix:{path}")
        try:
            port = int(ready.removeprefix("ready tcp:"))
            inside, _ = self._relay("inside", f"unix:{path}", f"tcp:{port}", inside=True)
        except BaseException:
            outside.stop()
            raise
        return self._keep(Bridge(port, inside, outside))

    def reaches(self, port: int) -> str:
        """Try a TCP connection from inside to 127.0.0.1:``port``:
        ``connected``, or the errno's name (``ECONNREFUSED``)."""
        done = subprocess.run(
            [*self.command, sys.executable, str(RELAY), "--probe", f"tcp:{port}"],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=True,
        )
        return done.stdout.strip()

    def holds(self, pid: int) -> bool:
        """Whether process ``pid`` runs in this namespace."""
        ours = os.stat(f"/run/netns/{self.name}").st_ino
        return os.stat(f"/proc/{pid}/ns/net").st_ino == ours

    def close(self) -> None:
        """Stop the bridges, delete the namespace and the sockets' directory."""
        try:
            for bridge in self._bridges:
                bridge.stop()
        finally:
            self._bridges.clear()
            shutil.rmtree(self.sockets, ignore_errors=True)
            ip("netns", "delete", self.name)

    def _socket_path(self) -> Path:
        return self.sockets / f"bridge-{len(self._bridges)}.sock"

    def _keep(self, bridge: Bridge) -> Bridge:
        self._bridges.append(bridge)
        return bridge

    def _relay(
        self, side: str, listen: str, connect: str, *, inside: bool = False
    ) -> tuple[Process, str]:
        """Start one relay, wait until it listens; it and its ready line."""
        name = f"relay-{len(self._bridges)}-{side}"
        argv = [*(self.command if inside else []), sys.executable, str(RELAY), listen, connect]
        out = self.logs / f"{self.name}-{name}.out"
        process = Process.start(
            f"{name} ({listen} -> {connect})",
            argv,
            self.logs / f"{self.name}-{name}.log",
            stdout_path=out,
        )
        try:
            process.wait_until(lambda: bool(_first_line(out)), START_TIMEOUT, "its ready line")
        except BaseException:
            process.stop()
            raise
        return process, _first_line(out)


def _first_line(path: Path) -> str:
    """The first whole line of a file ("" until there is one)."""
    try:
        line, newline, _ = path.read_text().partition("\n")
    except FileNotFoundError:
        return ""
    return line if newline else ""


@contextmanager
def open_namespace(logs: Path) -> Iterator[NetworkNamespace]:
    """A new namespace (`NetworkNamespace.create`), closed (bridges stopped,
    namespace deleted) however the block ends."""
    namespace = NetworkNamespace.create(logs)
    try:
        yield namespace
    finally:
        namespace.close()
