"""A lean HTTP/1.1 load generator for `bench receiver`: prepared requests on kept-alive sockets.

The requests are whole byte strings made beforehand (signed bodies included), so a request
costs the generator a write and the parse of one status line and Content-Length: far less
than an HTTP client library, whose per-request cost is close to the server's own.
Each function returns a `Fired`: the latencies (s) of the answers that were 200, the count of
the rest (other statuses and broken connections, which are reopened), and for an open loop how
late the generator itself sent each request (its own lag, told apart from the receiver's).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Conn", "Fired", "closed_loop", "open_loop"]

HEADERS_END = b"\r\n\r\n"


@dataclass
class Fired:
    latencies: list[float] = field(default_factory=list)  # s, of the 200 answers
    errors: int = 0
    late: list[float] = field(default_factory=list)  # s, each send after its due time

    def answered(self, status: int, latency: float) -> None:
        if status == 200:
            self.latencies.append(latency)
        else:
            self.errors += 1


class Conn:
    """One kept-alive connection to 127.0.0.1:port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(self, request: bytes) -> int:
        """Send one request, read its whole answer: the status, or 0 when the connection broke."""
        try:
            if self.streams is None:
                self.streams = await asyncio.open_connection("127.0.0.1", self.port)
            reader, writer = self.streams
            writer.write(request)
            head = await reader.readuntil(HEADERS_END)
            length = _content_length(head)
            if length:
                await reader.readexactly(length)
            return int(head[9:12])
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            await self.close()
            return 0

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            return int(line[15:])
    return 0


async def closed_loop(port: int, requests: Sequence[bytes], concurrency: int) -> Fired:
    """`concurrency` connections, each sending its next request once answered."""
    fired = Fired()
    pending = iter(requests)

    async def connection() -> None:
        conn = Conn(port)
        for request in pending:  # one shared iterator: each request is sent once
            start = time.perf_counter()
            status = await conn.exchange(request)
            fired.answered(status, time.perf_counter() - start)
        await conn.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return fired


async def open_loop(port: int, requests: Sequence[bytes], rate: float, pool: int = 64) -> Fired:
    """Request i is due at t0 + i/rate whatever came before, on one of `pool` connections.

    Latency counts from when the request was due, so a queue (no connection free, a receiver
    behind) is counted, not hidden as coordinated omission would hide it.
    """
    free: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(pool):
        free.put_nowait(Conn(port))
    fired = Fired()

    async def one(request: bytes, due: float) -> None:
        fired.late.append(time.perf_counter() - due)  # before waiting for a free connection
        conn = await free.get()
        status = await conn.exchange(request)
        free.put_nowait(conn)
        fired.answered(status, time.perf_counter() - due)

    tasks = []
    start = time.perf_counter()
    for i, request in enumerate(requests):
        due = start + i / rate
        if (ahead := due - time.perf_counter()) > 0:
            await asyncio.sleep(ahead)
        tasks.append(asyncio.create_task(one(request, due)))
    await asyncio.gather(*tasks)
    while not free.empty():
        await free.get_nowait().close()
    return fired
