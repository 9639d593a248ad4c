"""A byte relay between a TCP port of 127.0.0.1 and a Unix socket: one half
of a `netns` bridge.

Run as a program (standard library only, so any Python runs it, inside a
network namespace too)::

    python relay.py LISTEN CONNECT     # each of them tcp:PORT or unix:PATH

It listens on LISTEN and relays each connection to a new connection to
CONNECT, both ways, half-closes included.  ``tcp:0`` picks a free port.  Once
it listens it prints ``ready tcp:PORT`` (the port it bound) or
``ready unix:PATH`` and a newline on stdout.  If CONNECT cannot be reached,
the accepted connection is closed at once: a client sees it as a dropped
connection (never as a refused one, since the listener accepted it).

``python relay.py --probe tcp:PORT`` instead tries one connection to
127.0.0.1:PORT and prints ``connected`` or the errno's name
(``ECONNREFUSED``): how a test shows what is reachable from where it runs.

TCP is 127.0.0.1 only, on both sides: tests never reach beyond loopback.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys

HOST = "127.0.0.1"
CHUNK = 64 * 1024
PROBE_TIMEOUT = 5.0

Address = tuple[str, str]  # ("tcp", "PORT") or ("unix", "PATH")


def parse(text: str) -> Address:
    kind, _, where = text.partition(":")
    if kind not in ("tcp", "unix") or not where or (kind == "tcp" and not where.isdigit()):
        raise SystemExit(f"relay: not tcp:PORT or unix:PATH: {text!r}")
    return kind, where


async def open_connection(address: Address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    kind, where = address
    if kind == "tcp":
        return await asyncio.open_connection(HOST, int(where))
    return await asyncio.open_unix_connection(where)


async def pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, other: asyncio.StreamWriter
) -> None:
    """Copy until end of file, then half-close; on an error drop both sides
    (the other direction would otherwise wait forever)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.transport.abort()
        other.transport.abort()


async def relay(listen: Address, target: Address) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await open_connection(target)
        except OSError:
            writer.transport.abort()
            return
        await asyncio.gather(
            pipe(reader, target_writer, writer), pipe(target_reader, writer, target_writer)
        )
        writer.close()
        target_writer.close()

    kind, where = listen
    if kind == "tcp":
        server = await asyncio.start_server(handle, HOST, int(where))
        port = server.sockets[0].getsockname()[1]
        print(f"ready tcp:{port}", flush=True)
    else:
        server = await asyncio.start_unix_server(handle, where)
        print(f"ready unix:{where}", flush=True)
    async with server:
        await server.serve_forever()


def probe(address: Address) -> str:
    kind, where = address
    if kind != "tcp":
        raise SystemExit("relay: --probe takes tcp:PORT")
    try:
        with socket.create_connection((HOST, int(where)), timeout=PROBE_TIMEOUT):
            return "connected"
    except OSError as error:
        if error.errno is None:
            return type(error).__name__
        return errno.errorcode.get(error.errno, str(error.errno))


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "--probe":
        print(probe(parse(argv[1])), flush=True)
        return
    if len(argv) != 2:
        raise SystemExit("usage: relay.py LISTEN CONNECT | relay.py --probe tcp:PORT")
    try:
        asyncio.run(relay(parse(argv[0]), parse(argv[1])))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
