"""A TCP relay in front of the test server, to cut a client's connection.

Cutting it closes both sides at once, as a dropped network or a killed SSH
tunnel does; the server's session only notices when it next talks to the
client, so a statement that is waiting (on a lock, say) runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from factories import connected


class Relay:
    """Forwards 127.0.0.1:<port> to the server; ``cut()`` drops every link."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        self.links: list[asyncio.StreamWriter] = []
        self.clients: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.held = False
        self.half = False

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _link(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if isinstance(self.target, str):
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.links += [writer, up_writer]
        self.clients.append(writer)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer)
            )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if not self.held:
                    writer.write(data)
                    await writer.drain()
        if not self.half:
            writer.transport.abort()

    def hold(self) -> None:
        """Drop everything from now on without closing anything, as a network
        black hole or a stopped server does: nobody is told."""
        self.held = True

    def cut_client_side(self) -> None:
        """Close only the clients' ends, as a NAT or firewall that forgets a
        connection does: the server's session stays, open and unaware."""
        self.half = True
        for writer in self.clients:
            writer.transport.abort()
        self.clients.clear()

    def cut(self) -> None:
        """Close every open link; new connections are still relayed."""
        for writer in self.links:
            writer.transport.abort()
        self.links.clear()

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@asynccontextmanager
async def relayed(dsn: str) -> AsyncIterator[tuple[Relay, str]]:
    """A relay to the server of ``dsn`` and a DSN for the same database through it."""
    async with connected(dsn, plain=True) as conn:
        row = await conn.fetchrow(
            "SELECT host(inet_server_addr()) AS addr, current_setting('port') AS port,"
            " current_setting('unix_socket_directories') AS sockets,"
            " current_user AS username, current_database() AS db"
        )
    port = int(row["port"])
    if row["addr"] is None:
        folder = row["sockets"].split(",")[0].strip()
        relay = Relay(f"{folder}/.s.PGSQL.{port}")
    else:
        relay = Relay((row["addr"], port))
    own = await relay.start()
    try:
        yield relay, f"postgresql://{row['username']}@127.0.0.1:{own}/{row['db']}"
    finally:
        await relay.stop()
