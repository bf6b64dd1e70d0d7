"""A TCP proxy that can take its service away: the chaos test's outages.

The PostgreSQL and RabbitMQ servers of the machine are shared (with other sessions, with CI), so
the chaos test never stops a service: every process of the run reaches each dependency through
a `FaultProxy`, and an outage is a cut at the proxy. `cut()` closes every open connection (both
ends, at once, as a server that died would) and stops listening, so that a new connection is
refused; `restore()` listens again on the same port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Pair:
    client: socket.socket
    upstream: socket.socket
    half_closed: bool = False

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


@dataclass
class FaultProxy:
    """127.0.0.1:`port` forwarding to `target_host`:`target_port`, until cut."""

    name: str
    target_host: str
    target_port: int
    port: int = 0
    connections: int = 0  # accepted so far
    _listener: socket.socket | None = field(default=None, repr=False)
    _pairs: set[_Pair] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _up: bool = False

    @property
    def up(self) -> bool:
        return self._up

    def start(self) -> FaultProxy:
        self._listen()
        return self

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener, self._up = listener, True
        threading.Thread(
            target=self._accept, args=(listener,), name=f"proxy-{self.name}", daemon=True
        ).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by cut() or stop()
            try:
                upstream = socket.create_connection((self.target_host, self.target_port), 5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client, upstream)
            with self._lock:
                if not self._up:
                    pair.close()
                    continue
                self._pairs.add(pair)
                self.connections += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(pair, source, sink), name=f"pump-{self.name}",
                    daemon=True,
                ).start()  # fmt: skip

    def _pump(self, pair: _Pair, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        # One side finished or failed: the other is told (half-close), as TCP would.
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        with self._lock:
            done, pair.half_closed = pair.half_closed, True
            if done:
                self._pairs.discard(pair)
        if done:
            pair.close()

    def cut(self) -> None:
        """The service goes away: every connection closed, new ones refused."""
        with self._lock:
            listener, self._listener, self._up = self._listener, None, False
            pairs, self._pairs = self._pairs, set()
        if listener is not None:
            listener.close()
        for pair in pairs:
            pair.close()

    def restore(self) -> None:
        """The service is back, on the same port."""
        if not self._up:
            self._listen()

    def stop(self) -> None:
        self.cut()
