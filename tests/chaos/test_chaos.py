"""The chaos test (issue 13): the whole system under a steady stream of delivery requests while
its dependencies go away in turn.

Production's processes as the Procfile starts them (gunicorn web, two Celery workers, beat, the
fleet simulator) on PostgreSQL and RabbitMQ, with Redis and the MongoDB wire-protocol server of
development, a real SMTP server and a business's webhook receiver. A thread posts delivery
requests at a steady rate throughout. In turn the database, Redis, the broker, MongoDB and SMTP
are out for CHAOS_OUTAGE_SECONDS each (30 with `make chaos`, 3 in `make test`) and come back;
then a worker is SIGKILLed with its pool and a new one started, as Kubernetes would. The
database goes first: what its outage strands (a webhook batch whose outcome could not be
recorded) waits out its claim's 60-s lease while the others go on.

An outage is a cut at a proxy (tests/chaos/proxy.py): PostgreSQL and RabbitMQ are shared with
other sessions and with CI, so no service is ever stopped; every process reaches every
dependency through a FaultProxy, which closes every open connection and refuses new ones for
the outage. RabbitMQ serves the run in a virtual host of its own (rabbitmqctl); when it does not
answer on 5672 or no vhost can be made, the run is on a Redis broker and says so. Without a
PostgreSQL server the run is on SQLite and the database outage is left out, saying why: a cut
needs a server.

A request refused (503 with Retry-After) is sent again with the same Idempotency-Key until it
is accepted, as a client should: one refused while its commit was under way when the database
went away had been stored, and the retry's answer replays it (the run counts those).

At the end, once every delivery is finished: every request was accepted in the end and
delivered exactly once (one assignment, one `delivered`), none stored twice, no drone held two
deliveries at once (from the deliveries' events in the order the database wrote them), the live
status the business reads says what the database says, no email arrived at the SMTP server
under two Message-IDs (a send cut off before the server's answer came back is sent again with
its Message-ID, the most SMTP allows: the run counts those, and mail clients show them once),
no event reached the webhook receiver under two webhook-ids, nothing failed, every refusal was
a 503 with Retry-After, no outbox message was left, and web answered no 500. It prints
those counts and the web pod's probes during each outage; liveness stays 200 throughout and
readiness stays 200 through the broker, MongoDB and SMTP outages (portal/health.py).
"""

from __future__ import annotations

import contextlib
import email
import json
import logging
import math
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from aiosmtpd.controller import Controller

from devtools.localservices import LocalServer, free_port, mongo_server, redis_server
from tests.chaos.proxy import FaultProxy
from tests.support import BASE_DIR, PYTHON, procfile_command, stop_process_group, wait_for
from tests.webhooks.conftest import Receiver

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

OUTAGE_SECONDS = float(os.environ.get("CHAOS_OUTAGE_SECONDS") or 3)
# Between two outages the system catches its breath, so that they come in turn.
RECOVERY_SECONDS = float(os.environ.get("CHAOS_RECOVERY_SECONDS") or max(2.0, OUTAGE_SECONDS / 3))
RATE = float(os.environ.get("CHAOS_RATE") or 2)  # delivery requests per second
# A refused request is sent again for this long, then counted as never accepted.
RETRY_SECONDS = max(60.0, OUTAGE_SECONDS * 3)
RETRIED = {503, None}
DRONES = int(os.environ.get("CHAOS_DRONES") or 40)
SPEEDUP = 60  # the simulator flies this many times faster than real time
# How long the end may take to settle (deliveries flown, emails and webhooks sent).
SETTLE_SECONDS = float(os.environ.get("CHAOS_SETTLE_SECONDS") or 240)
# CHAOS_BROKER=redis and CHAOS_DATABASE=sqlite run on the embedded defaults instead.
CENTER = (47.6062, -122.3321)
PG_DEFAULT = "postgres://postgres@127.0.0.1:5432/postgres"
RABBITMQ = ("127.0.0.1", 5672)


def answers(host: str, port: int) -> bool:
    try:
        with contextlib.closing(socket.create_connection((host, port), 2)):
            return True
    except OSError:
        return False


# --- the backing services ---------------------------------------------------------------------


def postgres_server() -> tuple[str | None, str]:
    """The PostgreSQL server to make the run's database on (DATABASE_URL's, else the local
    one), or None and why not."""
    import psycopg

    configured = os.environ.get("DATABASE_URL", "")
    url = configured if configured.startswith("postgres") else PG_DEFAULT
    parts = urlsplit(url)
    admin = parts._replace(path="/postgres").geturl()
    try:
        psycopg.connect(admin, connect_timeout=3).close()
    except psycopg.Error as exc:
        where = f"{parts.hostname}:{parts.port or 5432}"
        return None, f"no PostgreSQL server answers at {where} ({exc})"
    return admin, ""


@contextlib.contextmanager
def postgres_database(admin: str) -> Iterator[str]:
    """A new database of a unique name on the server, dropped at the end."""
    import psycopg

    name = f"fabrikam_chaos_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(admin)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def rabbitmq_vhost() -> Iterator[tuple[str | None, str]]:
    """A virtual host of the run's own on the machine's RabbitMQ (its queues apart from every
    other user's), deleted at the end; or None and why not."""
    if not answers(*RABBITMQ):
        yield None, "RabbitMQ does not answer on 127.0.0.1:5672"
        return
    vhost = f"fabrikam-chaos-{uuid.uuid4().hex[:10]}"

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
        )

    try:
        made = ctl("add_vhost", vhost)
    except (OSError, subprocess.TimeoutExpired) as exc:
        yield None, f"RabbitMQ answers but no vhost could be made (rabbitmqctl: {exc})"
        return
    if made.returncode != 0:
        why = (made.stderr or made.stdout).strip().splitlines()[-1:]
        yield None, f"RabbitMQ answers but no vhost could be made (rabbitmqctl: {why})"
        return
    try:
        ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield vhost, ""
    finally:
        ctl("delete_vhost", vhost)


class MailCounter:
    """The mail server: every message it took, as (recipient, subject, Message-ID)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.messages.append((rcpt, str(message["Subject"]), str(message["Message-ID"])))
        return "250 OK"


# --- the processes ----------------------------------------------------------------------------


@dataclass
class Processes:
    env: dict[str, str]
    logs: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as out:
            process = subprocess.Popen(
                argv, cwd=BASE_DIR, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.running[name] = process
        return process

    def worker(self, name: str) -> subprocess.Popen[bytes]:
        return self.start(name, [*procfile_command("worker"), "--hostname", f"{name}@%h"])

    def stop(self) -> None:
        for process in reversed(self.running.values()):
            stop_process_group(process, timeout=15)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")


# --- the stream of requests and the probes ----------------------------------------------------


@dataclass
class Answer:
    seq: int
    phase: str
    status: int | None  # None: no answer (timeout, connection refused)
    retry_after: str | None
    delivery_id: str | None
    detail: str
    replayed: bool = False  # Idempotent-Replayed: an earlier try had stored it
    retries: list[Answer] = field(default_factory=list)

    @property
    def last(self) -> Answer:
        return self.retries[-1] if self.retries else self


class Stream:
    """POST /api/v1/deliveries at a steady rate, each request numbered (its recipient's name),
    every answer kept. Each carries an Idempotency-Key, and one refused or unanswered is sent
    again after its Retry-After until it is accepted, as a business's client would: a request
    whose commit was under way when the database went away may have been stored although its
    answer was a 503, and the key makes the retry answer with that delivery rather than store a
    second one."""

    def __init__(self, url: str, key: str, rate: float) -> None:
        self.url, self.key, self.rate = url, key, rate
        self.phase = "steady"
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.rng = random.Random(13)
        self.thread = threading.Thread(target=self._run, name="stream", daemon=True)
        self.retrying = ThreadPoolExecutor(32, thread_name_prefix="retry")

    def body(self, seq: int) -> dict[str, Any]:
        def near(radius_km: float) -> dict[str, float]:
            east, north = (self.rng.uniform(-radius_km, radius_km) for _ in range(2))
            return {
                "lat": round(CENTER[0] + north / 111.2, 6),
                "lon": round(CENTER[1] + east / (111.2 * math.cos(math.radians(CENTER[0]))), 6),
            }

        return {
            "pickup": near(1.5),
            "dropoff": near(1.5),
            "package": {"size": "small", "weight_kg": round(self.rng.uniform(0.3, 2.0), 2)},
            "recipient": {"name": f"chaos {seq}", "email": f"r{seq}@chaos.example"},
        }

    def _send(self, seq: int, phase: str, body: dict[str, Any]) -> Answer:
        headers = {"Authorization": f"Api-Key {self.key}", "Idempotency-Key": f"chaos-{seq}"}
        try:
            response = requests.post(self.url, json=body, headers=headers, timeout=15)
        except requests.RequestException as exc:
            return Answer(seq, phase, None, None, None, f"{type(exc).__name__}: {exc}")
        delivery_id = None
        if response.status_code == 202:
            delivery_id = str(response.json().get("id"))
        return Answer(
            seq, phase, response.status_code, response.headers.get("Retry-After"),
            delivery_id, response.text[:200],
            replayed=response.headers.get("Idempotent-Replayed") == "true",
        )  # fmt: skip

    def _post(self, seq: int, phase: str, body: dict[str, Any]) -> None:
        answer = self._send(seq, phase, body)
        with self.lock:
            self.answers.append(answer)
        if answer.status in RETRIED:
            self.retrying.submit(self._retry, answer, body, time.monotonic() + RETRY_SECONDS)

    def _retry(self, first: Answer, body: dict[str, Any], until: float) -> None:
        last = first
        while last.status in RETRIED and time.monotonic() < until:
            time.sleep(float(last.retry_after or 2))
            last = self._send(first.seq, self.phase, body)
            first.retries.append(last)

    def _run(self) -> None:
        with ThreadPoolExecutor(6, thread_name_prefix="post") as pool:
            seq, started = 0, time.monotonic()
            while not self.stopping.is_set():
                pool.submit(self._post, seq, self.phase, self.body(seq))
                seq += 1
                self.stopping.wait(max(0.0, started + seq / self.rate - time.monotonic()))

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)
        self.retrying.shutdown(wait=True)


class Probes:
    """The kubelet's view of the web pod: /healthz/ready and /healthz/live twice a second."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.phase = "steady"
        self.seen: dict[str, dict[str, Counter[str]]] = defaultdict(
            lambda: {"ready": Counter(), "live": Counter()}
        )
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="probes", daemon=True)

    def _probe(self, path: str) -> str:
        try:
            return str(requests.get(f"{self.base}{path}", timeout=5).status_code)
        except requests.RequestException as exc:
            return type(exc).__name__

    def _run(self) -> None:
        while not self.stopping.is_set():
            phase = self.phase
            self.seen[phase]["ready"][self._probe("/healthz/ready")] += 1
            self.seen[phase]["live"][self._probe("/healthz/live")] += 1
            self.stopping.wait(0.5)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)

    def line(self, phase: str) -> str:
        def counts(counter: Counter[str]) -> str:
            return " ".join(f"{code}x{n}" for code, n in sorted(counter.items()))

        seen = self.seen[phase]
        return f"ready {counts(seen['ready']) or '-'}; live {counts(seen['live']) or '-'}"


# --- the verdict ------------------------------------------------------------------------------


def booked_twice(events: list[dict[str, Any]]) -> list[str]:
    """Drones that held two deliveries at once. A delivery holds its drone from its `assigned`
    event to its next `requested`, `delivered`, `cancelled` or `failed` one; the events are
    taken in the order the database wrote them (their ids), which is the order of the
    transactions that booked and released the drone (each writes its event)."""
    held: dict[str, str] = {}  # drone serial -> delivery holding it
    holding: dict[str, str] = {}  # delivery -> drone serial
    clashes = []
    for event in events:  # ordered by id
        delivery, status = event["delivery_id"], event["status"]
        if status == "assigned":
            serial = event["note"].removeprefix("drone ").split()[0]
            if serial in held and held[serial] != delivery:
                clashes.append(f"{serial}: {held[serial]} and {delivery}")
            held[serial], holding[delivery] = delivery, serial
        elif status in ("requested", "delivered", "cancelled", "failed") and delivery in holding:
            serial = holding.pop(delivery)
            if held.get(serial) == delivery:
                del held[serial]
    return clashes


_TASK = re.compile(r"Task [\w.]+\[([0-9a-f-]+)\] (received|succeeded|raised|retry)")


def under_way(log: str) -> list[str]:
    """The tasks a worker's log shows received and not finished (running, prefetched, or held
    for their countdown: unacknowledged, so the broker gives them to another worker)."""
    received: dict[str, bool] = {}
    for task_id, what in _TASK.findall(log):
        if what == "received":
            received.setdefault(task_id, True)
        else:
            received[task_id] = False
    return [task_id for task_id, open_ in received.items() if open_]


def server_errors(log: str) -> list[str]:
    """The web log's 500s (the access log's lines, and a worker timing out)."""
    return [
        line
        for line in log.splitlines()
        if re.search(r"portal\.access \S+ \S+ 50[0-2] ", line) or "WORKER TIMEOUT" in line
    ]


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Run:
    """The system under test, up and answering, with every dependency behind its proxy."""

    base: str
    database_url: str  # directly, not through the proxy: for preparing and reading the world
    proxies: dict[str, FaultProxy]
    processes: Processes
    mail: MailCounter
    receiver: Receiver
    notes: list[str]
    left_out: dict[str, str]  # outages that cannot be had here, and why
    world: dict[str, Any] = field(default_factory=dict)

    def world_command(self, *args: str, timeout: float) -> dict[str, Any]:
        """`python -m tests.chaos.world ...` on the run's database; its stderr in the logs."""
        done = subprocess.run(
            [PYTHON, "-m", "tests.chaos.world", *args],
            cwd=BASE_DIR, env={**self.processes.env, "DATABASE_URL": self.database_url},
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        (self.processes.logs / f"world-{args[0]}.log").write_text(done.stderr)
        assert done.returncode == 0, done.stderr[-3000:]
        result: dict[str, Any] = json.loads(done.stdout)
        return result


def process_env(run: Run, tmp_path: Path, web_port: int, broker_url: str) -> dict[str, str]:
    proxies = run.proxies
    env = {
        **os.environ,
        "DEBUG": "true",
        "LOG_FORMAT": "text",
        "TASK_LOG_LEVEL": "INFO",  # the worker's line for each task received and done (_TASK)
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": run.database_url,
        # Connections kept, as in production: a cut breaks them under the processes' feet.
        "DATABASE_CONN_MAX_AGE": "60",
        "REDIS_URL": f"redis://127.0.0.1:{proxies['redis'].port}/0",
        "MONGODB_URI": f"mongodb://127.0.0.1:{proxies['mongodb'].port}/",
        "MONGODB_TIMEOUT_MS": "2000",
        "CELERY_BROKER_URL": broker_url,
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(proxies["smtp"].port),
        "EMAIL_USE_TLS": "false",
        "WEB_PORT": str(web_port),
        "PUBLIC_BASE_URL": run.base,
        "FLEET_SIM_API_URL": run.base,
        "FLEET_SIM_SPEEDUP": str(SPEEDUP),
        "WORKER_HEARTBEAT_FILE": str(tmp_path / "worker-heartbeat"),
        "SIMULATOR_HEARTBEAT_FILE": str(tmp_path / "simulator-heartbeat"),
        "CHAOS_WEBHOOK_URL": run.receiver.url,
        "CHAOS_DRONES": str(DRONES),
        "WEBHOOK_ALLOW_PRIVATE": "true",
        # Speed knobs: retries and sweeps that converge in seconds rather than minutes.
        "DELIVERY_RETRY_BASE_SECONDS": "0.5",
        "DELIVERY_RETRY_MAX_SECONDS": "3",
        "WEBHOOK_RETRY_BASE_SECONDS": "0.5",
        "WEBHOOK_RETRY_MAX_SECONDS": "3",
        "NOTIFICATIONS_RETRY_BASE_SECONDS": "1",
        "NOTIFICATIONS_RETRY_MAX_SECONDS": "3",
        "NOTIFICATIONS_SWEEP_GRACE_SECONDS": "2",
        "NOTIFICATIONS_CLAIM_TIMEOUT_SECONDS": "15",
        "CELERY_VISIBILITY_TIMEOUT": "30",
        "SERVICEBUS_LOCK_SECONDS": "20",
        "BROKER_MAX_COUNTDOWN_SECONDS": "10",
        # The stream is the only client: no business limit or rate limit refuses it.
        "BUSINESS_MAX_ACTIVE_DELIVERIES": "0",
        "API_RATE_LIMIT": "1000/second",
    }
    for name in ("CELERY_BROKER_TRANSPORT", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    return env


def started(stack: contextlib.ExitStack, server: LocalServer) -> LocalServer:
    stack.callback(server.stop)
    return server.start()


@contextlib.contextmanager
def chaos_run(tmp_path: Path) -> Iterator[Run]:
    """Backing services, proxies, the mail server and the webhook receiver, the run's world
    (a business, its key, a fleet, a webhook endpoint), and web, two workers, beat and the
    simulator from the Procfile; everything stopped and removed at the end."""
    with contextlib.ExitStack() as stack:
        notes: list[str] = []
        left_out: dict[str, str] = {}
        proxies: dict[str, FaultProxy] = {}

        def proxy(name: str, host: str, port: int) -> FaultProxy:
            proxies[name] = FaultProxy(name, host, port).start()
            stack.callback(proxies[name].stop)
            return proxies[name]

        # The database: a new one on the PostgreSQL server, else an SQLite file.
        admin, no_postgres = postgres_server()
        if os.environ.get("CHAOS_DATABASE") == "sqlite":
            admin, no_postgres = None, "CHAOS_DATABASE=sqlite"
        if admin is not None:
            direct = urlsplit(stack.enter_context(postgres_database(admin)))
            through = proxy("database", direct.hostname or "127.0.0.1", direct.port or 5432)
            user = f"{direct.username}@" if direct.username else ""
            proxied_database = direct._replace(netloc=f"{user}127.0.0.1:{through.port}").geturl()
            database_url = direct.geturl()
            notes.append(f"database: PostgreSQL, a new database {direct.path[1:]}")
        else:
            database_url = proxied_database = f"sqlite:///{tmp_path / 'chaos.sqlite3'}"
            left_out["database"] = f"an SQLite file cannot be cut off; {no_postgres}"
            notes.append(f"database: SQLite ({no_postgres})")

        # Redis and MongoDB of the run's own; RabbitMQ in a vhost of its own, else a Redis.
        services = tmp_path / "services"
        redis = started(stack, redis_server(services / "redis"))
        mongo = started(stack, mongo_server(services / "mongo"))
        if os.environ.get("CHAOS_BROKER") == "redis":
            vhost, no_rabbitmq = None, "CHAOS_BROKER=redis"
        else:
            vhost, no_rabbitmq = stack.enter_context(rabbitmq_vhost())
        if vhost is not None:
            broker = proxy("broker", *RABBITMQ)
            broker_url = f"amqp://guest:guest@127.0.0.1:{broker.port}/{vhost}"
            notes.append(f"broker: RabbitMQ, vhost {vhost}")
        else:
            own = started(stack, redis_server(services / "broker", durable=True))
            broker = proxy("broker", "127.0.0.1", own.port)
            broker_url = f"redis://127.0.0.1:{broker.port}/0"
            notes.append(f"broker: Redis (append-only), because {no_rabbitmq}")
        proxy("redis", "127.0.0.1", redis.port)
        proxy("mongodb", "127.0.0.1", mongo.port)

        # aiosmtpd logs every command at INFO.
        mail_log = logging.getLogger("mail.log")
        stack.callback(mail_log.setLevel, mail_log.level)
        mail_log.setLevel(logging.WARNING)
        mail, mail_port = MailCounter(), free_port()
        controller = Controller(mail, hostname="127.0.0.1", port=mail_port)
        controller.start()
        stack.callback(controller.stop)
        proxy("smtp", "127.0.0.1", mail_port)
        receiver = Receiver(port=free_port())
        receiver.start()
        stack.callback(receiver.stop)

        web_port = free_port()
        logs = tmp_path / "logs"
        logs.mkdir()
        run = Run(
            f"http://127.0.0.1:{web_port}", database_url, proxies, Processes({}, logs), mail,
            receiver, notes, left_out,
        )  # fmt: skip
        run.processes.env = process_env(run, tmp_path, web_port, broker_url)
        run.processes.env["DATABASE_URL"] = proxied_database
        run.world = run.world_command("prepare", timeout=300)
        receiver.secret = run.world["webhook_secret"]

        stack.callback(run.processes.stop)
        run.processes.start("web", procfile_command("web", WEB_PORT=str(web_port)))
        run.processes.worker("worker1")
        run.processes.worker("worker2")
        beat = [*procfile_command("beat"), "--schedule", str(tmp_path / "beat-schedule")]
        run.processes.start("beat", beat)
        wait_for(
            lambda: requests.get(f"{run.base}/healthz/ready", timeout=2).status_code == 200,
            timeout=60,
            what=f"web ready (log: {logs / 'web.log'})",
        )
        run.processes.start("simulator", procfile_command("simulator"))
        yield run


# --- the test ---------------------------------------------------------------------------------

OUTAGES = ["database", "redis", "broker", "mongodb", "smtp"]
# Readiness is the database and Redis (portal/health.py): web stays in rotation through these.
STAYS_READY = {"broker", "mongodb", "smtp"}


def test_deliveries_survive_each_dependency_going_away_and_a_worker_killed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with chaos_run(tmp_path) as run:
        stream = Stream(f"{run.base}/api/v1/deliveries", run.world["key"], RATE)
        probes = Probes(run.base)

        def phase(name: str) -> None:
            stream.phase = probes.phase = name

        stream.start()
        probes.start()
        try:
            time.sleep(RECOVERY_SECONDS)
            for name in OUTAGES:
                if name in run.left_out:
                    continue
                phase(name)
                run.proxies[name].cut()
                time.sleep(OUTAGE_SECONDS)
                run.proxies[name].restore()
                phase(f"after {name}")
                time.sleep(RECOVERY_SECONDS)
            phase("worker killed")
            # Killed while it holds work (bounded: its log says when it does).
            with contextlib.suppress(AssertionError):
                wait_for(lambda: bool(under_way(run.processes.log("worker1"))), timeout=10, what="")
            victim = run.processes.running["worker1"]
            os.killpg(victim.pid, signal.SIGKILL)  # the pod's every process, at once
            victim.wait()
            killed_holding = len(under_way(run.processes.log("worker1")))
            run.processes.worker("worker3")  # its replacement, as the Deployment starts one
            time.sleep(max(RECOVERY_SECONDS, 5.0))
            phase("after worker killed")
            time.sleep(RECOVERY_SECONDS)
        finally:
            stream.stop()
            probes.stop()

        # Settle: every delivery flown, every email and webhook sent (or given up).
        settling = time.monotonic()
        final = run.world_command("wait", str(SETTLE_SECONDS), timeout=SETTLE_SECONDS + 120)
        settle_seconds = time.monotonic() - settling
        # What the business reads: the live status (Redis, falling back to the database).
        final["live"] = live_statuses(run.base, run.world["key"], stream.answers)
        # The last emails and webhooks reach their servers a moment after they are marked.
        time.sleep(2)
        web_log = run.processes.log("web")

    report, failures = verdict(stream.answers, final, run.mail, run.receiver, web_log)
    with capsys.disabled():  # printed in `make test` too
        print("\n\nchaos: " + "; ".join(run.notes))
        print(
            f"chaos: outages of {OUTAGE_SECONDS:g} s, each a cut at a proxy (every connection "
            f"closed, new ones refused), {RECOVERY_SECONDS:g} s apart; {RATE:g} requests/s; "
            f"{run.world['drones']} drones at {SPEEDUP}x"
        )
        for name, why in run.left_out.items():
            print(f"chaos: no {name} outage: {why}")
        print("chaos: the web pod's probes during each outage (status x times):")
        for name in [*OUTAGES, "worker killed"]:
            if name in probes.seen:
                print(f"  {name:<14} {probes.line(name)}")
        print(f"chaos: worker1 SIGKILLed with its pool, holding {killed_holding} tasks")
        for line in report:
            print(f"chaos: {line}")
        print(f"chaos: settled {settle_seconds:.0f} s after the stream stopped")
        if final["waiting"]:
            print(f"chaos: not settled after {SETTLE_SECONDS:g} s: {', '.join(final['waiting'])}")
        print(f"chaos: logs in {run.processes.logs}")

    for name in probes.seen:
        assert set(probes.seen[name]["live"]) == {"200"}, (name, probes.line(name))
        if name in STAYS_READY:
            assert set(probes.seen[name]["ready"]) == {"200"}, (name, probes.line(name))
    assert not final["waiting"], final["waiting"]
    assert not failures, failures


def live_statuses(base: str, key: str, answers: list[Answer]) -> dict[str, str]:
    session = requests.Session()
    session.headers["Authorization"] = f"Api-Key {key}"
    statuses = {}
    for answer in (a.last for a in answers):
        if answer.status == 202 and answer.delivery_id:
            url = f"{base}/api/v1/deliveries/{answer.delivery_id}/status"
            response = session.get(url, timeout=10)
            statuses[answer.delivery_id] = (
                response.json()["status"] if response.status_code == 200 else response.text
            )
    return statuses


def verdict(
    answers: list[Answer],
    world: dict[str, Any],
    mail: MailCounter,
    receiver: Receiver,
    web_log: str,
) -> tuple[list[str], list[str]]:
    """The counts to print, and what went wrong."""
    failures: list[str] = []
    # Each request's first answer, and where its retries ended.
    first_accepted = [a for a in answers if a.status == 202 and a.delivery_id]
    refused = [a for a in answers if a.status == 503 and a.retry_after]
    other = [a for a in answers if a not in first_accepted and a not in refused]
    other += [r for a in answers for r in a.retries if r.status not in (202, 503)]
    by_phase: dict[str, Counter[str]] = defaultdict(Counter)
    for a in answers:
        kind = "accepted" if a in first_accepted else "refused" if a in refused else "other"
        by_phase[a.phase][kind] += 1
    accepted = [a.last for a in answers if a.last.status == 202 and a.last.delivery_id]
    accepted_on_retry = [a for a in answers if a.retries and a.last in accepted]
    replayed = [a for a in accepted_on_retry if a.last.replayed]
    never_accepted = {a.seq for a in answers if a.last not in accepted}

    deliveries = {d["id"]: d for d in world["deliveries"]}
    stored = Counter(d["recipient_name"] for d in world["deliveries"])
    stored_twice = sorted(name for name, n in stored.items() if n > 1)
    events: dict[str, Counter[str]] = defaultdict(Counter)
    for event in world["events"]:
        events[event["delivery_id"]][event["status"]] += 1

    accepted_ids = [a.delivery_id for a in accepted if a.delivery_id]
    lost = [i for i in accepted_ids if i not in deliveries]
    delivered_once = [
        i
        for i in accepted_ids
        if i in deliveries
        and deliveries[i]["status"] == "delivered"
        and events[i]["delivered"] == 1
        and events[i]["assigned"] == 1
    ]
    not_delivered = sorted(
        (deliveries[i]["status"], i)
        for i in accepted_ids
        if i in deliveries and deliveries[i]["status"] != "delivered"
    )
    twice = [
        (i, dict(events[i]))
        for i in deliveries
        if events[i]["delivered"] > 1 or events[i]["assigned"] > 1
    ]
    stored_anyway = sorted(seq for seq in never_accepted if f"chaos {seq}" in stored)
    unknown = [
        d["id"]
        for d in world["deliveries"]
        if d["id"] not in set(accepted_ids)
        and int(d["recipient_name"].split()[-1]) not in never_accepted
    ]
    failed = [
        (d["id"], d["failure_reason"]) for d in world["deliveries"] if d["status"] == "failed"
    ]
    stale = {
        i: (status, deliveries[i]["status"])
        for i, status in world["live"].items()
        if i in deliveries and status != deliveries[i]["status"]
    }
    clashes = booked_twice(world["events"])
    # A drone silent through an outage is marked lost until its next report (not a failure).
    flagged = [e for e in world["events"] if "lost contact" in e["note"]]

    emails = Counter(mail.messages)
    # The same email twice is one message under two Message-IDs. The same Message-ID again is
    # a send whose answer the cut lost (SMTP has no better): mail clients show it once.
    message_ids = Counter((rcpt, subject) for rcpt, subject, _ in emails)
    emails_twice = {key: n for key, n in message_ids.items() if n > 1}
    resent = sum(n - 1 for n in emails.values())
    sent_notifications = [n for n in world["notifications"] if n["status"] == "sent"]
    unsent = [n for n in world["notifications"] if n["status"] != "sent"]
    pairs = Counter((p["data"]["id"], p["type"]) for p in receiver.processed)
    webhooks_twice = {key: n for key, n in pairs.items() if n > 1}
    unverified = [r.webhook_id for r in receiver.received if not r.verified]
    webhooks_failed = [w for w in world["webhooks"] if w["status"] != "delivered"]
    errors = server_errors(web_log)

    report = [
        f"requests: {len(answers)}: {len(first_accepted)} accepted (202), {len(refused)} "
        f"refused (503 with Retry-After), {len(other)} other answers",
        "answers by phase: "
        + "; ".join(
            f"{phase} {c['accepted']}/{c['refused']}/{c['other']}" for phase, c in by_phase.items()
        )
        + " (accepted/refused/other)",
        f"accepted and delivered exactly once: {len(delivered_once)} of {len(accepted)}; "
        f"not delivered: {len(not_delivered)}; lost: {len(lost)}; delivered or assigned more "
        f"than once: {len(twice)}; failed: {len(failed)}",
        f"refused, then accepted when sent again with the same Idempotency-Key: "
        f"{len(accepted_on_retry)} ({len(replayed)} replayed: the refused try had been stored); "
        f"never accepted: {len(never_accepted)}",
        f"never accepted but stored: {len(stored_anyway)}; stored twice: {len(stored_twice)}; "
        f"stored without a request: {len(unknown)}",
        f"drones booked twice: {len(clashes)}; deliveries flagged for a drone that lost "
        f"contact: {len(flagged)}",
        f"live status (GET .../status) other than the database's: {len(stale)}",
        f"emails: {sum(emails.values())} received by the SMTP server ({resent} again under the "
        f"same Message-ID), {len(sent_notifications)} marked sent, {len(unsent)} not sent; "
        f"received twice under two Message-IDs: {len(emails_twice)}",
        f"webhooks: {len(receiver.received)} requests ({len(receiver.processed)} webhook-ids) "
        f"for {len(pairs)} (delivery, event) pairs; processed twice: {len(webhooks_twice)}; "
        f"not delivered: {len(webhooks_failed)}; bad signatures: {len(unverified)}",
        f"outbox messages never published: {world['outbox_unpublished']}",
        f"web's 500s and worker timeouts: {len(errors)}",
    ]
    checks: list[tuple[str, Any]] = [
        ("answers neither 202 nor 503 with Retry-After", [(a.status, a.detail) for a in other]),
        ("accepted deliveries not stored", lost),
        ("accepted deliveries not delivered", not_delivered),
        ("deliveries delivered or assigned more than once", twice),
        ("requests never accepted", sorted(never_accepted)),
        ("requests never accepted but stored", stored_anyway),
        ("requests stored twice", stored_twice),
        ("deliveries stored without a request", unknown),
        ("failed deliveries", failed),
        ("drones booked twice", clashes),
        ("live statuses other than the database's (API, database)", stale),
        ("emails received twice", emails_twice),
        ("emails not sent", unsent),
        ("emails sent but not received", len(sent_notifications) - len(emails)),
        ("webhook events processed twice", webhooks_twice),
        ("webhooks not delivered", webhooks_failed),
        ("webhooks badly signed", unverified),
        ("outbox messages never published", world["outbox_unpublished"]),
        ("web's 500s", errors[:10]),
    ]  # fmt: skip
    failures = [f"{what}: {value}" for what, value in checks if value]
    return report, failures
