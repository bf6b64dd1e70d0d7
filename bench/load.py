"""A cheap HTTP/1.1 load generator on asyncio streams, for 127.0.0.1 only.

Requests are prebuilt bytes, so the client's cost per request is a write, a header parse and a
read. Connections are kept alive when the server allows it; gunicorn's sync workers (the
Procfile's) answer `Connection: close`, and then each request opens a fresh connection, which
is what any client of that server pays.

Two shapes of load:

- `closed_loop`: `concurrency` connections each sending the next request as soon as the last
  answer arrived, for the peak rate the server sustains.
- `open_loop`: requests sent at a constant rate whatever the answers do, latency counted from
  when each request was due (not when it went out), so a stalled server shows up in the tail
  instead of slowing the client down (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

HOST = "127.0.0.1"


@dataclass
class Target:
    """Prebuilt requests to one path, sent in turn."""

    name: str
    port: int
    requests: list[bytes]

    def __post_init__(self) -> None:
        self._next = itertools.cycle(self.requests)

    def next_request(self) -> bytes:
        return next(self._next)


def build_request(method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Result:
    """What one load run saw."""

    name: str
    seconds: float
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    client_cpu_seconds: float = 0.0
    connections: int = 0
    skipped: int = 0

    @property
    def completed(self) -> int:
        return sum(self.statuses.values())

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def percentile_ms(self, pct: int) -> float:
        if len(self.latencies) < 2:
            return float("nan")
        cuts = statistics.quantiles(self.latencies, n=100, method="inclusive")
        return cuts[pct - 1] * 1000

    @property
    def client_cpu_pct(self) -> float:
        return 100 * self.client_cpu_seconds / self.seconds if self.seconds else 0.0


class Connection:
    """One keep-alive connection; reopened when the server closes it."""

    def __init__(self, port: int, result: Result) -> None:
        self.port = port
        self.result = result
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
            self.result.connections += 1
        assert self.reader is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, _, header_block = head.partition(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = -1
        close = status_line.startswith(b"HTTP/1.0")
        for line in header_block.split(b"\r\n"):
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"connection":
                close = value.strip().lower() == b"close"
        if length >= 0:
            await self.reader.readexactly(length)
        else:  # no length: the body runs to the end of the connection
            await self.reader.read()
            close = True
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _closed_loop(target: Target, concurrency: int, seconds: float, warmup: float) -> Result:
    result = Result(target.name, seconds)
    loop = asyncio.get_running_loop()
    began = loop.time()
    measure_from = began + warmup
    stop_at = measure_from + seconds
    cpu_at_start: list[float] = []

    async def client() -> None:
        connection = Connection(target.port, result)
        try:
            while True:
                now = loop.time()
                if now >= stop_at:
                    return
                if now >= measure_from and not cpu_at_start:
                    cpu_at_start.append(time.process_time())
                sent = loop.time()
                try:
                    status = await connection.exchange(target.next_request())
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    connection.close()
                    if sent >= measure_from:
                        result.errors[type(exc).__name__] += 1
                    await asyncio.sleep(0.01)
                    continue
                done = loop.time()
                # Only requests sent and answered inside the window count.
                if sent >= measure_from and done <= stop_at:
                    result.statuses[status] += 1
                    result.latencies.append(done - sent)
        finally:
            connection.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.client_cpu_seconds = time.process_time() - (cpu_at_start or [time.process_time()])[0]
    return result


async def _open_loop(target: Target, rate: float, seconds: float, max_outstanding: int) -> Result:
    result = Result(target.name, seconds)
    loop = asyncio.get_running_loop()
    idle: list[Connection] = []
    outstanding = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(due: float, request: bytes) -> None:
        nonlocal outstanding
        connection = idle.pop() if idle else Connection(target.port, result)
        try:
            status = await connection.exchange(request)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            connection.close()
            result.errors[type(exc).__name__] += 1
        else:
            result.statuses[status] += 1
            result.latencies.append(loop.time() - due)
            idle.append(connection)
        finally:
            outstanding -= 1

    total = int(rate * seconds)
    cpu_began = time.process_time()
    start = loop.time() + 0.05
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if outstanding >= max_outstanding:
            result.skipped += 1  # the server is this far behind: counted, not queued forever
            continue
        outstanding += 1
        task = loop.create_task(one(due, target.next_request()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    result.client_cpu_seconds = time.process_time() - cpu_began
    for connection in idle:
        connection.close()
    return result


def closed_loop(target: Target, *, concurrency: int, seconds: float, warmup: float = 1.0) -> Result:
    return asyncio.run(_closed_loop(target, concurrency, seconds, warmup))


def open_loop(target: Target, *, rate: float, seconds: float, max_outstanding: int = 256) -> Result:
    return asyncio.run(_open_loop(target, rate, seconds, max_outstanding))
