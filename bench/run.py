"""`make bench`: ingestion through gunicorn, deliveries assigned per second, drone choice.

    .venv/bin/python bench/run.py [--deliveries 1000] [--seconds 3] [--rounds 5] [--skip PHASE]

Everything in one run on this machine, with what the run starts stopped at the end (also on
Ctrl-C): its own Redis and MongoDB-protocol server (never the ones of `make run`), gunicorn and
Celery workers started with the Procfile's command lines, production settings (DEBUG off).
The database is the one of DATABASE_URL (PostgreSQL), else a throwaway SQLite file under
.local/bench/; on a configured database the bench removes what it made. The Celery broker is
that Redis unless BENCH_BROKER_URL names another (RabbitMQ: amqp://...), whose default queue the
bench purges.

1. Ingestion: the peak rate of `POST /api/v1/deliveries` (closed loop) as a ratio to a bare DRF
   endpoint served by the same gunicorn (bench.settings adds `/bench/bare`), measured in
   alternating rounds with the same client (the ratio is the median of the rounds' ratios, each
   round's two rates measured back to back); then latency at half the peak (open loop).
2. End to end: N deliveries stored through the service while no worker runs (their messages
   queue up in Redis), then `celery -A portal worker` started; deliveries assigned per second.
3. Drone choice with 10,000 drones: bench/drone_choice.py, its output included.
4. Telemetry in: `POST /api/v1/telemetry` in batches of 100 from a gateway, reports accepted per
   second and the web processes' CPU per report (after phase 2, most drones hold a delivery).
5. The fleet simulator's capacity: bench/simulator.py, 1,000 drones at 1 report/s, its CPU.
6. Live tracking fan-out: bench/tracking.py, 1,000 trackers on server-sent events (and the same
   by polling, for comparison), how far behind the drone each one is, and the p99 of
   `POST /api/v1/deliveries` meanwhile.
7. No-fly zones and ingestion: `POST /api/v1/deliveries` with 500 active zones in the area
   against none, alternating rounds.
8. Route planning among 500 zones: bench/airspace.py, p99 of a clear straight line and of a
   detour.
9. Webhook fan-out: bench/webhooks.py, events delivered per second to a local TLS receiver, and
   `POST /api/v1/deliveries` p99 in windows with it against windows without, alternated.
10. Tracing's cost: bench/telemetry_cost.py, ingestion with tracing off, sampled and always on.
11. At scale: bench/scale.py, 1,000,000 deliveries and their events (PostgreSQL only), p99 of a
   business's list at the first page and deep in it, of one delivery and of its status; then
   phases 1 and 2 run against that database and against an empty one, alternated, compared.
12. The system as `make run` starts it (bench/system.py: web, worker, beat, simulator on the
   embedded defaults), 150 deliveries a second for a minute: accepted and assigned per second,
   and no delivery flagged because its drone went silent.

On PostgreSQL the targets are issue 14's (POSTGRESQL_TARGETS); the ingestion phase also prints
the database's own ceiling for the same statement, and the web and worker phases their
processes' resident memory against the Helm chart's limits. Every bench that posts calls as many
businesses (api_clients), each under the default per-business limits.

The machine is shared, so each phase also says where the CPU went (bench/cpu.py: the web or
worker processes, Redis, MongoDB, this database's PostgreSQL backends, everything else), and
the request and the workflow are profiled layer by layer in this process (bench/layers.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench import cpu, layers, load  # noqa: E402
from devtools.localservices import free_port, local_services  # noqa: E402

WORK_DIR = BASE_DIR / ".local" / "bench"
SQLITE_FILE = WORK_DIR / "bench.sqlite3"
# The bench's fleet lives here, away from the demo fleet and from drone_choice.py's (Berlin).
CENTER = (59.9139, 10.7522)  # Oslo
FLEET_RADIUS_KM = 6.0
TRIP_RADIUS_KM = 4.0

# The targets on the embedded default (SQLite), and on PostgreSQL, where production runs
# (issue 14): set by `targets_for` once the database is known.
TARGET_RATIO = 0.35
TARGET_P99_MS = 50.0
TARGET_ASSIGNED_PER_S = 150.0
POSTGRESQL_TARGETS = {"TARGET_RATIO": 0.40, "TARGET_P99_MS": 25.0, "TARGET_ASSIGNED_PER_S": 200.0}
TARGET_CHOICE_P99_MS = 10.0
CHOICE_FLEETS = (10_000, 100_000)
# Resident memory of a web or worker pod's processes after the bench: within the Helm chart's
# limit (deploy/helm/drone-delivery/values.yaml) with this share to spare.
MEMORY_SPARE = 0.30
TARGET_TELEMETRY_PER_S = 2000.0
TARGET_ZONES_RATIO = 0.90
BENCH_ZONES = 500
WARMUP_AFTER_SWITCH = 2.0  # seconds (bench.run.zones_effect)
TELEMETRY_BATCH = 100
# The businesses calling the API in the ingestion and zones phases (each ~8,000 requests), and
# those the end-to-end deliveries belong to: each stays under BUSINESS_MAX_ACTIVE_DELIVERIES
# (default 100) as the deliveries pile up with no worker running.
API_CLIENTS = 300
E2E_BUSINESSES = 40


class Stop(Exception):
    """SIGTERM: unwind like Ctrl-C, so that `finally` blocks stop what was started."""


def on_sigterm(_signum: int, _frame: object) -> None:
    raise Stop


# --- processes --------------------------------------------------------------------------------


def targets_for(vendor: str) -> None:
    """PostgreSQL's targets when the bench runs on it."""
    if vendor.startswith("postgresql"):
        globals().update(POSTGRESQL_TARGETS)


def chart_memory_limit_mib(component: str) -> float:
    """The memory limit of `component` (web, worker) in the chart's default values."""
    import yaml

    values = yaml.safe_load(
        (BASE_DIR / "deploy" / "helm" / "drone-delivery" / "values.yaml").read_text()
    )
    limit = str(values[component]["resources"]["limits"]["memory"])
    number, unit = re.fullmatch(r"([\d.]+)(Ki|Mi|Gi|M|G)", limit).groups()  # type: ignore[union-attr]
    return float(number) * {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "M": 0.954, "G": 976.6}[unit]


def procfile_command(kind: str, **variables: str) -> list[str]:
    """The Procfile's command line for `kind`, with ${VAR:-default} filled in from `variables`."""
    for line in (BASE_DIR / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == kind:

            def fill(match: re.Match[str]) -> str:
                return variables.get(match.group(1), match.group(2) or "")

            argv = shlex.split(re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", fill, command))
            # The venv's tools, not whatever is first on PATH.
            tool = Path(sys.executable).with_name(argv[0])
            return [str(tool) if tool.exists() else argv[0], *argv[1:]]
    raise SystemExit(f"no {kind!r} line in the Procfile")


@contextlib.contextmanager
def process(
    argv: list[str], *, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own process group (Ctrl-C is ours to handle), stopped on exit."""
    with log.open("ab") as out:
        child = subprocess.Popen(
            argv, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        yield child
    finally:
        stop_group(child)


def stop_group(child: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):  # also children that outlived their parent
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def wait_http(url: str, *, timeout: float, child: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"the server exited with {child.returncode}; see {log}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, timeout=1) as response,  # noqa: S310  # nosec B310 # http to loopback
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s; see {log}")


def machine_load() -> str:
    """The 1-minute load average: the machine is shared, so each phase says how busy it was."""
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"


OTHERS = ("other processes", "postgresql (other databases)")


def grouper(urls: dict[str, str], **roots: int) -> Any:
    """Names a process for the CPU split: this script, a started server's group, or other."""
    from django.db import connection

    me = os.getpid()
    db_name = connection.settings_dict["NAME"]
    ports = {
        "redis": f"--port {urls['REDIS_URL'].rsplit(':', 1)[1].split('/')[0]}",
        "mongodb": f"--port {urls['MONGODB_URI'].rsplit(':', 1)[1].strip('/')}",
    }

    def group(snap: cpu.Snapshot, pid: int) -> str:
        if pid == me:
            return "bench client"
        for name, root in roots.items():
            if cpu.descends_from(snap, pid, root):
                return name
        command = snap.command.get(pid, "")
        for name, flag in ports.items():
            if flag in command:
                return name
        if command.startswith("postgres: "):  # a backend's title names its database
            return "postgresql" if f" {db_name} " in command else "postgresql (other databases)"
        return "other processes"

    return group


# --- the database -----------------------------------------------------------------------------


def database_url(environ: dict[str, str], sqlite_file: Path = SQLITE_FILE) -> str:
    """DATABASE_URL (its database created when missing), else a new SQLite file of the bench's."""
    url = environ.get("DATABASE_URL", "")
    if url:
        if url.startswith(("postgres://", "postgresql://")):
            ensure_postgres_database(url)
        return url
    for leftover in WORK_DIR.glob(sqlite_file.name + "*"):
        leftover.unlink()
    return f"sqlite:///{sqlite_file}"


def bench_environ(
    original: dict[str, str], *, sqlite_file: Path = SQLITE_FILE, **extra: str
) -> dict[str, str]:
    """The environment of a bench and of everything it starts: production code paths (DEBUG
    off), always its own Redis and MongoDB-protocol server (never those of `make run`: a bench
    purges its broker queue), the database of DATABASE_URL or a throwaway SQLite file."""
    env = {
        key: value
        for key, value in original.items()
        if key not in ("REDIS_URL", "MONGODB_URI", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        {
            "DEBUG": "false",  # production code paths: no query log, no debug pages
            "SECRET_KEY": "bench-only-" + os.urandom(16).hex(),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PUBLIC_BASE_URL": "http://127.0.0.1",  # links in answers; no bench follows one
            "SECURE_SSL_REDIRECT": "false",
            "FABRIKAM_IGNORE_LOCAL_SERVICES_FILE": "true",
            "API_RATE_LIMIT": "10000000/second",  # the throttle runs, never refuses
            # The per-business limits stay at their defaults: a bench calls from many businesses
            # (api_clients), each under them, as production's traffic comes (one business
            # holding every delivery would make each request count thousands).
            "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
            "APPLICATIONINSIGHTS_CONNECTION_STRING": "",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    env["DATABASE_URL"] = database_url(original, sqlite_file)
    return env


@contextlib.contextmanager
def django_for_bench(env: dict[str, str]) -> Iterator[tuple[dict[str, str], str]]:
    """The local services started (their URLs added to `env`), Django set up in this process
    on them and the database migrated; yields the services' URLs and the database's name."""
    with local_services(env) as urls:
        if env.get("BENCH_BROKER_URL"):
            # Another broker than the bench's Redis (an AMQP one: RabbitMQ); its default queue
            # is purged, as the Redis one is.
            urls["CELERY_BROKER_URL"] = env["BENCH_BROKER_URL"]
        env.update(urls)
        os.environ.clear()
        os.environ.update({**env, "DJANGO_SETTINGS_MODULE": "portal.settings"})
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        vendor = f"{connection.vendor} {connection.settings_dict['NAME']}"
        print(f"database: {vendor}; services: {urls}", flush=True)
        call_command("migrate", verbosity=0)
        if vacuum_as_autovacuum_would():
            print(
                "   autovacuum is off on this server (production's is on): each phase starts "
                "after a VACUUM ANALYZE, as autovacuum would have run between them, and tables "
                f"are analyzed as they grow, by autovacuum's rule every {AUTOANALYZE_SECONDS:g} s",
                flush=True,
            )
            analyzing: contextlib.AbstractContextManager[None] = autoanalyze(env["DATABASE_URL"])
        else:
            analyzing = contextlib.nullcontext()
        with analyzing:
            yield urls, vendor


def autovacuum_on() -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW autovacuum")
        return bool(cursor.fetchone()[0] == "on")


def vacuum_as_autovacuum_would() -> bool:
    """On a PostgreSQL server whose autovacuum is off, what it would have done between two
    phases: VACUUM ANALYZE. Without it, every row a phase updates or deletes stays in the
    tables and indexes the next phase reads, and the planner never sees the tables' sizes, so
    each phase measures the leftovers of the ones before it (a webhook claim read ~99,000 dead
    index entries after a few runs). Nothing on SQLite, or when autovacuum runs. Whether it
    vacuumed."""
    from django.db import connection

    if connection.vendor != "postgresql" or autovacuum_on():
        return False
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    return True


# How often `autoanalyze` applies autovacuum's analyze rule (autovacuum itself: every
# autovacuum_naptime, a minute by default, on a database whose tables are never empty).
AUTOANALYZE_SECONDS = 2.0
# Tables autovacuum would analyze now: changed by more than its threshold since their last
# ANALYZE (the server's autovacuum_analyze_threshold and _scale_factor, as autovacuum reads them).
_DUE_FOR_ANALYZE = """
SELECT format('%I.%I', s.schemaname, s.relname)
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.n_mod_since_analyze > current_setting('autovacuum_analyze_threshold')::float8
    + current_setting('autovacuum_analyze_scale_factor')::float8 * greatest(c.reltuples, 0)
"""


@contextlib.contextmanager
def autoanalyze(url: str) -> Iterator[None]:
    """On a PostgreSQL server whose autovacuum is off, what its analyze would do meanwhile:
    every AUTOANALYZE_SECONDS, in a thread of its own, ANALYZE each table that autovacuum's rule
    says is due.

    Without it a phase runs on the statistics its tables had when the run began: empty. The
    planner then plans for a table of one row (sequential scans), and a cached plan keeps that
    plan however large the table grows: psycopg prepares the hot statements, and PostgreSQL's
    foreign-key checks keep their own. ingestion's statement read the whole deliveries table
    twice per request, the database's CPU per request growing from 0.8 to 2.8 ms over 6,000
    requests. An ANALYZE invalidates the plans that read the table, so they are planned again."""
    import psycopg

    stop = threading.Event()
    failed: list[str] = []

    def run() -> None:
        try:
            with psycopg.connect(
                url.replace("postgres://", "postgresql://", 1), autocommit=True
            ) as connection:
                while not stop.wait(AUTOANALYZE_SECONDS):
                    for (table,) in connection.execute(_DUE_FOR_ANALYZE).fetchall():
                        connection.execute(f"ANALYZE {table}")  # a quoted name (format %I)
        except psycopg.Error as exc:
            failed.append(str(exc).strip())

    thread = threading.Thread(target=run, name="autoanalyze", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)
        if failed:
            print(f"   autoanalyze stopped: {failed[0]}", flush=True)


def ensure_postgres_database(url: str) -> None:
    """Create the named database when the server does not have it yet."""
    import psycopg
    from psycopg import sql

    name = url.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if not exists:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


# --- data -------------------------------------------------------------------------------------


def api_clients(count: int, name: str) -> list[tuple[Any, str]]:
    """`count` businesses with an API key each: (business, key). A bench's requests rotate over
    them (`keyed_requests`), so that each business stays under the per-business limits."""
    from businesses.services import business_create

    return [business_create(name=f"{name} {i}") for i in range(count)]


def quota_free(business_ids: list[Any]) -> None:
    """Mark the businesses' deliveries still under way cancelled, as if flown: a phase whose
    deliveries no worker takes stays under BUSINESS_MAX_ACTIVE_DELIVERIES round after round."""
    from deliveries.lifecycle import FINISHED
    from deliveries.models import Delivery

    Delivery.objects.filter(business_id__in=business_ids).exclude(status__in=FINISHED).update(
        status=Delivery.Status.CANCELLED
    )


def keyed_requests(path: str, bodies: list[bytes], keys: list[str]) -> list[bytes]:
    """POST requests of `bodies` to `path`, the i-th with the i-th key (round robin)."""
    return [
        load.build_request(
            "POST",
            path,
            body,
            {
                "Content-Type": "application/json",
                "Authorization": f"Api-Key {keys[i % len(keys)]}",
                "Accept": "application/json",
            },
        )
        for i, body in enumerate(bodies)
    ]


def random_point(rng: random.Random, radius_km: float) -> tuple[float, float]:
    distance = radius_km * math.sqrt(rng.random())
    bearing = rng.uniform(0, 2 * math.pi)
    lat = CENTER[0] + math.degrees(distance * math.cos(bearing) / 6371.0)
    lon = CENTER[1] + math.degrees(
        distance * math.sin(bearing) / 6371.0 / math.cos(math.radians(CENTER[0]))
    )
    return round(lat, 6), round(lon, 6)


def delivery_bodies(count: int, seed: int) -> list[dict[str, Any]]:
    """Deliveries of 0.2 to 2.4 kg (every drone model carries them) over 0.5 to ~8 km."""
    rng = random.Random(seed)
    bodies: list[dict[str, Any]] = []
    while len(bodies) < count:
        pickup, dropoff = random_point(rng, TRIP_RADIUS_KM), random_point(rng, TRIP_RADIUS_KM)
        if abs(pickup[0] - dropoff[0]) + abs(pickup[1] - dropoff[1]) < 0.01:
            continue
        number = len(bodies)
        bodies.append(
            {
                "pickup": {"lat": pickup[0], "lon": pickup[1], "address": f"Shop {number}"},
                "dropoff": {"lat": dropoff[0], "lon": dropoff[1], "address": f"Home {number}"},
                "package": {
                    "size": rng.choice(["small", "medium"]),
                    "weight_kg": round(rng.uniform(0.2, 2.4), 2),
                    "tag": rng.choice(["pharmacy", "groceries", "documents"]),
                },
                "recipient": {"name": f"Customer {number}", "email": f"c{number}@example.com"},
            }
        )
    return bodies


@dataclass
class Made:
    """What the bench stored, to remove it from a configured database at the end."""

    business_ids: list[Any]
    drone_ids: list[Any]
    base_ids: list[Any]


def cleanup(made: Made) -> None:
    from businesses.models import Business
    from deliveries.models import Delivery, IdempotencyRecord, OutboxMessage, Quote
    from drones.models import Base, Drone, TelemetryKey

    deliveries = Delivery.objects.filter(business_id__in=made.business_ids)
    ids = [str(pk) for pk in deliveries.values_list("pk", flat=True)]
    for first in range(0, len(ids), 500):
        chunk = ids[first : first + 500]
        OutboxMessage.objects.filter(payload__delivery_id__in=chunk).delete()
    deliveries.delete()
    Quote.objects.filter(business_id__in=made.business_ids).delete()
    IdempotencyRecord.objects.filter(business_id__in=made.business_ids).delete()
    Business.objects.filter(pk__in=made.business_ids).delete()
    TelemetryKey.objects.filter(name="bench gateway").delete()
    for first in range(0, len(made.drone_ids), 500):
        Drone.objects.filter(pk__in=made.drone_ids[first : first + 500]).delete()
    Base.objects.filter(pk__in=made.base_ids).delete()


# --- 1. ingestion -----------------------------------------------------------------------------


@dataclass
class Ingestion:
    bare: list[load.Result]
    real: list[load.Result]
    latency: load.Result
    rate: float
    cpu_ratio: float
    memory: list[tuple[str, float]]
    ceiling: float | None = None

    @property
    def bare_peak(self) -> float:
        return sorted(r.rate for r in self.bare)[len(self.bare) // 2]

    @property
    def real_peak(self) -> float:
        return sorted(r.rate for r in self.real)[len(self.real) // 2]

    @property
    def round_ratios(self) -> list[float]:
        """Each round's real rate over its bare rate, measured back to back."""
        return [r.rate / b.rate for b, r in zip(self.bare, self.real, strict=True) if b.rate]

    @property
    def ratio(self) -> float:
        """The median of the rounds' ratios: the two rates of a round are measured one after
        the other, so a machine that speeds up or slows down between rounds (a shared one
        does) moves both, where a ratio of the two medians would mix rounds."""
        return statistics.median(self.round_ratios) if self.round_ratios else 0.0


def describe(result: load.Result) -> str:
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(result.statuses.items()))
    errors = f"; errors {dict(result.errors)}" if result.errors else ""
    skipped = f"; {result.skipped} not sent (too many outstanding)" if result.skipped else ""
    return (
        f"{result.name:<5} {result.rate:7.1f} req/s  p50 {result.percentile_ms(50):6.1f} ms  "
        f"p99 {result.percentile_ms(99):6.1f} ms  [{statuses}]{errors}{skipped}  "
        f"client CPU {result.client_cpu_pct:3.0f} %, {result.connections} connections"
    )


def ingestion(
    args: argparse.Namespace, env: dict[str, str], urls: dict[str, str], keys: list[str]
) -> Ingestion:
    """`keys`: the API clients calling at once, each a business of its own, as in production
    (each business then holds a share of the deliveries the limits count, not all of them)."""
    port = free_port()
    bodies = [json.dumps(b).encode() for b in delivery_bodies(500, seed=args.seed)]
    real = load.Target("real", port, keyed_requests("/api/v1/deliveries", bodies, keys))
    bare = load.Target("bare", port, keyed_requests("/bench/bare", bodies, keys))
    argv = procfile_command("web", WEB_PORT=str(port))
    web_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.settings"}
    log = WORK_DIR / "gunicorn.log"
    print(f"\n== 1. ingestion ({machine_load()})", flush=True)
    print(f"   {shlex.join(argv[-9:])}, bench.settings (log: {log})", flush=True)
    with process(argv, env=web_env, log=log) as web:
        wait_http(f"http://127.0.0.1:{port}/healthz/live", timeout=30, child=web, log=log)
        for target in (bare, real):  # warm both workers' code paths and connections
            load.closed_loop(target, concurrency=args.concurrency, seconds=1.0, warmup=0.5)
        group = grouper(urls, gunicorn=web.pid)
        bare_runs: list[load.Result] = []
        real_runs: list[load.Result] = []
        spent: dict[str, dict[str, float]] = {"bare": {}, "real": {}}
        walls = {"bare": 0.0, "real": 0.0}
        for round_ in range(args.rounds):
            order = [(bare, bare_runs), (real, real_runs)]
            for target, runs in order if round_ % 2 == 0 else order[::-1]:
                before = cpu.snapshot()
                result = load.closed_loop(
                    target, concurrency=args.concurrency, seconds=args.seconds, warmup=0.0
                )
                after = cpu.snapshot()
                cpu.add(spent[target.name], cpu.usage(before, after, group))
                walls[target.name] += after.at - before.at
                runs.append(result)
                print(f"   peak, closed loop x{args.concurrency}: {describe(result)}", flush=True)
        own: dict[str, float] = {}
        for name, runs in (("bare", bare_runs), ("real", real_runs)):
            served = sum(r.completed for r in runs)
            own[name] = sum(v for k, v in spent[name].items() if k not in OTHERS) / max(1, served)
            split = cpu.describe(spent[name], wall=walls[name], per=served, unit="request")
            print(f"   {name}: {split}", flush=True)
        real_peak = sorted(r.rate for r in real_runs)[len(real_runs) // 2]
        rate = real_peak / 2
        before = cpu.snapshot()
        latency = load.open_loop(real, rate=rate, seconds=args.open_seconds)
        after = cpu.snapshot()
        print(f"   open loop at {rate:.0f}/s:   {describe(latency)}", flush=True)
        print(
            "   open loop: "
            + cpu.describe(
                cpu.usage(before, after, group),
                wall=after.at - before.at,
                per=max(1, latency.completed),
                unit="request",
            ),
            flush=True,
        )
        memory = cpu.resident_mib(web.pid)
        print(f"   {describe_memory('web', memory)}", flush=True)
    cpu_ratio = own["bare"] / own["real"] if own["real"] else 0.0
    measured = Ingestion(bare_runs, real_runs, latency, rate, cpu_ratio, memory)
    rounds = ", ".join(f"{r:.3f}" for r in measured.round_ratios)
    print(f"   real / bare, round by round: {rounds}; median {measured.ratio:.3f}", flush=True)
    print(
        f"   CPU per request of the bench's own processes: bare {1000 * own['bare']:.2f} ms, "
        f"real {1000 * own['real']:.2f} ms: ratio {cpu_ratio:.2f}, what the rate ratio would be "
        "with the machine to itself",
        flush=True,
    )
    return measured


def database_ceiling(env: dict[str, str], business_ids: list[Any], seconds: float) -> float | None:
    """Requests per second the database itself sustains for ingestion's statement (the
    limit's count, the delivery and its event, all one statement), replayed with prepared
    rows from two connections, one per gunicorn worker: what the rate can be read against.
    PostgreSQL only (SQLite's single writer is not a server to measure)."""
    from decimal import Decimal

    import psycopg
    from django.conf import settings
    from django.db import connection

    from deliveries.models import Delivery, DeliveryEvent
    from deliveries.services import deliveries_limit_query
    from portal.db import one_statement, prepare_insert

    if connection.vendor != "postgresql":
        return None
    from django.utils import timezone

    now = timezone.now()
    rows = []
    for i in range(4000):
        delivery = Delivery(
            business_id=business_ids[i % len(business_ids)], pickup_lat=CENTER[0],
            pickup_lon=CENTER[1],
            dropoff_lat=CENTER[0] + 0.01, dropoff_lon=CENTER[1], package_size="small",
            package_weight_kg=1.0, recipient_name=f"Ceiling {i}", price_amount=Decimal("5.00"),
            price_currency="USD", route={}, book_at=None,
        )  # fmt: skip
        event = DeliveryEvent(delivery=delivery, status="requested", at=now)
        limit = deliveries_limit_query(
            business_id=delivery.business_id, customer_id=None, ahead=False
        )
        unless = limit.query if limit else None
        rows.append(one_statement(prepare_insert(delivery, event), unless=unless))
    done = [0, 0]
    stop = time.monotonic() + seconds

    def replay(which: int) -> None:
        with psycopg.connect(
            env["DATABASE_URL"].replace("postgres://", "postgresql://", 1),
            autocommit=True,
            prepare_threshold=settings.DATABASES["default"]["OPTIONS"].get("prepare_threshold"),
        ) as conn:
            for sql, params in rows[which::2]:
                if time.monotonic() > stop:
                    return
                conn.execute(sql, params)
                done[which] += 1

    threads = [threading.Thread(target=replay, args=(n,)) for n in range(2)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rate = sum(done) / (time.monotonic() - began)
    print(
        f"   the database's ceiling for ingestion's statement (the count and the INSERTs), "
        f"replayed from 2 connections: {rate:.0f} requests/s",
        flush=True,
    )
    return rate


# --- 2. end to end ----------------------------------------------------------------------------


@dataclass
class EndToEnd:
    count: int
    assigned: int
    other: dict[str, int]
    first_to_last_s: float
    start_to_last_s: float
    queued: int
    memory: list[tuple[str, float]]
    # Deliveries with more than one `assigned` event; drones holding two deliveries at once.
    assigned_twice: int = 0
    drones_twice: int = 0

    @property
    def once(self) -> bool:
        return self.assigned_twice == 0 and self.drones_twice == 0

    @property
    def rate(self) -> float:
        return self.assigned / self.first_to_last_s if self.first_to_last_s > 0 else 0.0

    @property
    def rate_with_startup(self) -> float:
        return self.assigned / self.start_to_last_s if self.start_to_last_s > 0 else 0.0


def forget_waiting() -> None:
    """Remove the deliveries earlier phases left waiting, their messages purged, from the bench's
    own businesses: a workflow round would otherwise take them as new (as it should, for a
    delivery whose message the broker lost) and book the fleet for them."""
    from deliveries.models import Delivery

    left = Delivery.objects.filter(
        status=Delivery.Status.REQUESTED, business__name__startswith="Bench "
    )
    count, _ = left.delete()
    if count:
        print(f"   removed {count} rows of deliveries earlier phases left waiting", flush=True)


def end_to_end(
    args: argparse.Namespace, env: dict[str, str], urls: dict[str, str], business_ids: list[Any]
) -> EndToEnd:
    """`business_ids`: whose the deliveries are, in turn (each stays under its limits)."""
    from django.db.models import Count, Max, Min

    from deliveries.api import DeliveryIn, delivery_request_from
    from deliveries.models import Delivery, DeliveryEvent
    from deliveries.services import delivery_create
    from portal.celery import app

    print(f"\n== 2. end to end ({machine_load()})", flush=True)
    app.control.purge()  # what the ingestion bench queued
    forget_waiting()
    began = time.perf_counter()
    for i, body in enumerate(delivery_bodies(args.deliveries, seed=args.seed + 1)):
        serializer = DeliveryIn(data=body)
        serializer.is_valid(raise_exception=True)
        delivery_create(
            business_id=business_ids[i % len(business_ids)],
            request=delivery_request_from(serializer.validated_data),
        )
    stored_in = time.perf_counter() - began
    with app.connection_for_read() as broker:
        # A passive declare counts the messages on any transport (LLEN on Redis).
        queue = app.conf.task_default_queue
        channel: Any = broker.default_channel
        queued = int(channel.queue_declare(queue, passive=True).message_count)
    print(
        f"   stored {args.deliveries} through delivery_create in {stored_in:.1f} s; "
        f"{queued} messages waiting in the broker",
        flush=True,
    )
    argv = procfile_command("worker")
    argv = [a.replace("worker@%h", "bench@%h") for a in argv]
    log = WORK_DIR / "worker.log"
    worker_env = {
        **env,
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "WORKER_HEARTBEAT_FILE": str(WORK_DIR / "worker-heartbeat"),
    }
    print(f"   {shlex.join(argv[-8:])}, EMAIL_BACKEND=locmem (log: {log})", flush=True)
    mine = Delivery.objects.filter(business_id__in=business_ids)
    started_at = time.time()
    before = cpu.snapshot()
    with process(argv, env=worker_env, log=log) as worker:
        group = grouper(urls, **{"celery workers": worker.pid})
        deadline = time.monotonic() + args.e2e_timeout
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited with {worker.returncode}; see {log}")
            done = mine.exclude(status=Delivery.Status.REQUESTED).count()
            if done >= args.deliveries:
                break
            if done != last:
                last, last_change = done, time.monotonic()
            elif time.monotonic() - last_change > 30:
                print(f"   no progress for 30 s at {done} done; giving up", flush=True)
                break
            time.sleep(0.2)
        after = cpu.snapshot()
        memory = cpu.resident_mib(worker.pid)
    print(f"   {describe_memory('worker', memory)}", flush=True)
    by_status = dict(mine.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
    span = DeliveryEvent.objects.filter(
        delivery__business_id__in=business_ids, status=Delivery.Status.ASSIGNED
    ).aggregate(first=Min("at"), last=Max("at"))
    assigned = by_status.pop(Delivery.Status.ASSIGNED, 0)
    first_to_last = start_to_last = 0.0
    if span["first"] and span["last"]:
        first_to_last = (span["last"] - span["first"]).total_seconds()
        start_to_last = span["last"].timestamp() - started_at
    # Nothing lost to speed: each delivery assigned once, no drone holding two of them.
    assigned_twice, drones_twice = assigned_more_than_once(business_ids)
    print(
        f"   exactly once: {assigned_twice} deliveries assigned more than once, "
        f"{drones_twice} drones holding more than one delivery",
        flush=True,
    )
    result = EndToEnd(
        args.deliveries, assigned, by_status, first_to_last, start_to_last, queued, memory,
        assigned_twice, drones_twice,
    )  # fmt: skip
    print(
        f"   {assigned} of {args.deliveries} assigned{'; ' + str(by_status) if by_status else ''}: "
        f"first to last assignment {first_to_last:.2f} s = {result.rate:.0f}/s; "
        f"from worker start {start_to_last:.2f} s = {result.rate_with_startup:.0f}/s",
        flush=True,
    )
    split = cpu.usage(before, after, group)
    split["bench (polling)"] = split.pop("bench client", 0)
    print(
        "   from worker start: "
        + cpu.describe(split, wall=after.at - before.at, per=max(1, assigned), unit="delivery"),
        flush=True,
    )
    return result


# --- 4. telemetry in ---------------------------------------------------------------------------


@dataclass
class Telemetry:
    result: load.Result
    drones: int
    web_cpu_s: float
    wall_s: float
    with_delivery: int
    # Batches sent (warm-up included) and distinct batches made: past that they would repeat,
    # and a repeated report is ignored, not accepted.
    sent: int = 0
    distinct: int = 0

    @property
    def rate(self) -> float:
        return self.result.rate * TELEMETRY_BATCH

    @property
    def web_cpu_ms_per_report(self) -> float:
        reports = self.result.completed * TELEMETRY_BATCH
        return 1000 * self.web_cpu_s / reports if reports else 0.0


def telemetry(
    args: argparse.Namespace, env: dict[str, str], urls: dict[str, str], drone_ids: list[Any]
) -> Telemetry:
    """`POST /api/v1/telemetry` in batches of 100 from a gateway of every base, each drone once
    a second of report time (so positions reach the database every few reports, as in flight).
    After the end-to-end phase most drones hold an assigned delivery: their reports take the
    path with ETAs and live status writes."""
    from datetime import timedelta

    from django.utils import timezone

    from drones.models import Base, Drone
    from drones.services import telemetry_key_create

    drones = list(
        Drone.objects.filter(pk__in=drone_ids).values_list("serial", "lat", "lon", "base_id")
    )
    with_delivery = Drone.objects.filter(
        pk__in=drone_ids, assigned_delivery_id__isnull=False
    ).count()
    _, key = telemetry_key_create(
        name="bench gateway", base_ids=list(Base.objects.values_list("pk", flat=True))
    )
    per_second = max(1, len(drones) // TELEMETRY_BATCH)
    start = timezone.now() - timedelta(hours=2)
    headers = {"Content-Type": "application/json", "Authorization": f"Telemetry-Key {key}"}
    requests = []
    # Enough distinct batches for the whole run: a repeated report would only be ignored.
    for i in range(per_second * 200):
        at = start + timedelta(seconds=i // per_second, milliseconds=i % per_second)
        first = (i % per_second) * TELEMETRY_BATCH
        when = at.isoformat().replace("+00:00", "Z")
        reports = [
            {"drone": serial, "time": when, "lat": lat, "lon": lon, "alt_m": 0.0,
             "ground_speed_mps": 0.0, "heading": 0.0, "battery_pct": 95.0}
            for serial, lat, lon, _ in drones[first : first + TELEMETRY_BATCH]
        ]  # fmt: skip
        body = json.dumps({"reports": reports}).encode()
        requests.append(load.build_request("POST", "/api/v1/telemetry", body, headers))
    port = free_port()
    target = load.Target("tele", port, requests)
    argv = procfile_command("web", WEB_PORT=str(port))
    log = WORK_DIR / "gunicorn-telemetry.log"
    print(f"\n== 4. telemetry in ({machine_load()})", flush=True)
    print(
        f"   {len(drones)} drones ({with_delivery} with an assigned delivery), batches of "
        f"{TELEMETRY_BATCH}, {len(requests)} distinct batches (log: {log})",
        flush=True,
    )
    with process(argv, env=env, log=log) as web:
        wait_http(f"http://127.0.0.1:{port}/healthz/live", timeout=30, child=web, log=log)
        group = grouper(urls, gunicorn=web.pid)
        warm = load.closed_loop(target, concurrency=4, seconds=1.5, warmup=0.0)
        before = cpu.snapshot()
        result = load.closed_loop(
            target, concurrency=4, seconds=args.seconds * max(1, args.rounds // 2), warmup=0.0
        )
        after = cpu.snapshot()
        spent = cpu.usage(before, after, group)
    measured = Telemetry(
        result,
        len(drones),
        spent.get("gunicorn", 0.0),
        after.at - before.at,
        with_delivery,
        sent=warm.completed + result.completed + 8,  # and those outstanding at each end
        distinct=len(requests),
    )
    print(f"   closed loop x4: {describe(result)}", flush=True)
    print(
        f"   {measured.rate:.0f} reports/s; web (gunicorn) CPU "
        f"{measured.web_cpu_ms_per_report:.3f} ms per report, "
        f"{100 * measured.web_cpu_s / max(1e-9, measured.wall_s):.0f} % of one core",
        flush=True,
    )
    print(
        "   "
        + cpu.describe(
            spent,
            wall=measured.wall_s,
            per=max(1, result.completed * TELEMETRY_BATCH),
            unit="report",
        ),
        flush=True,
    )
    return measured


# --- 7. no-fly zones and ingestion ----------------------------------------------------------------


@dataclass
class ZonesEffect:
    without: list[load.Result]
    with_zones: list[load.Result]
    detours: int
    bodies: int
    # The first seconds after each switch, served while the web processes' caches of the
    # airspace fill (with other trips than those measured): reported, not in the ratio.
    after_switch: list[load.Result]

    @property
    def ratio(self) -> float:
        """The median of the rounds' (with zones / without) rates, each pair back to back."""
        ratios = [
            w.rate / n.rate for n, w in zip(self.without, self.with_zones, strict=True) if n.rate
        ]
        return statistics.median(ratios) if ratios else 0.0

    @property
    def after_switch_rate(self) -> float:
        return statistics.median(r.rate for r in self.after_switch) if self.after_switch else 0.0


def bench_zones(count: int, avoid: list[tuple[float, float]], seed: int) -> dict[str, Any]:
    """`count` squares 50 to 400 m across, scattered over the bench's area (20 x 20 km), none
    over the places in `avoid` (the bases), as a FeatureCollection."""
    rng = random.Random(seed)
    features: list[dict[str, Any]] = []
    km_lat = 1 / 111.2
    km_lon = 1 / (111.2 * math.cos(math.radians(CENTER[0])))
    while len(features) < count:
        lat = CENTER[0] + rng.uniform(-10, 10) * km_lat
        lon = CENTER[1] + rng.uniform(-10, 10) * km_lon
        half = rng.uniform(0.025, 0.2)
        clear = half + 0.15
        if any(abs(a - lat) < clear * km_lat and abs(b - lon) < clear * km_lon for a, b in avoid):
            continue
        ring = [
            [lon - half * km_lon, lat - half * km_lat],
            [lon + half * km_lon, lat - half * km_lat],
            [lon + half * km_lon, lat + half * km_lat],
            [lon - half * km_lon, lat + half * km_lat],
            [lon - half * km_lon, lat - half * km_lat],
        ]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"name": f"bench zone {len(features)}", "reason": "other"},
            }
        )
    return {"type": "FeatureCollection", "features": features}


def zones_effect(
    args: argparse.Namespace,
    env: dict[str, str],
    urls: dict[str, str],
    clients: list[tuple[Any, str]],
    bases: list[Any],
) -> ZonesEffect:
    """POST /api/v1/deliveries with 500 active no-fly zones in the area against none, in
    alternating rounds with the same requests (zones switched through the service, which the
    web processes see within a second).

    Zones change rarely (an operator's edit, a flight restriction) next to the requests that
    flow all day, so each round measures the steady state: after a switch, the web processes
    first serve WARMUP_AFTER_SWITCH seconds of other trips (their caches of the airspace fill
    as in production, not with the measured trips themselves), whose rate is reported too.

    No worker flies these deliveries, so the businesses' active deliveries pile up round after
    round; before each switch the ones still under way are marked cancelled (`quota_free`), so
    that no round runs into BUSINESS_MAX_ACTIVE_DELIVERIES however fast the machine serves."""
    from airspace.models import NoFlyZone
    from airspace.routing import NoRoute
    from airspace.selectors import airspace_cache_clear
    from airspace.services import zones_activate, zones_delete, zones_import
    from drones.geo import Point
    from drones.routes import router_for

    # The zones are scattered over the whole area, bases excepted; the requests are the
    # ingestion phase's kind of trips, those whose pickup and dropoff lie outside every zone.
    zones_import(bench_zones(BENCH_ZONES, [(base.lat, base.lon) for base in bases], args.seed))
    ids = list(
        NoFlyZone.objects.filter(name__startswith="bench zone ").values_list("pk", flat=True)
    )
    airspace_cache_clear()
    router = router_for(None)
    bodies: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []  # the warm-up's trips
    detours = 0
    for body in delivery_bodies(4000, seed=args.seed):
        a = Point(body["pickup"]["lat"], body["pickup"]["lon"])
        b = Point(body["dropoff"]["lat"], body["dropoff"]["lon"])
        if router.zone_at(a) is not None or router.zone_at(b) is not None:
            continue
        try:
            detour = len(router.route(a, b)) > 2
        except NoRoute:
            continue
        if len(bodies) <= len(others):
            bodies.append(body)
            detours += detour
        else:
            others.append(body)
        if len(bodies) == 500 and len(others) == 500:
            break
    keys = [key for _, key in clients]
    port = free_port()
    encoded = [json.dumps(body).encode() for body in bodies]
    target = load.Target("real", port, keyed_requests("/api/v1/deliveries", encoded, keys))
    encoded = [json.dumps(body).encode() for body in others]
    warmup = load.Target(
        "other trips", port, keyed_requests("/api/v1/deliveries", encoded, keys[::-1])
    )
    argv = procfile_command("web", WEB_PORT=str(port))
    log = WORK_DIR / "gunicorn-zones.log"
    print(f"\n== 7. no-fly zones and ingestion ({machine_load()})", flush=True)
    print(
        f"   {len(ids)} active zones 50-400 m across over 20 x 20 km; {len(bodies)} distinct "
        f"requests, {detours} of which cross a zone's margin (a detour is planned) (log: {log})",
        flush=True,
    )
    without: list[load.Result] = []
    with_zones: list[load.Result] = []
    after_switch: list[load.Result] = []
    try:
        with process(argv, env=env, log=log) as web:
            wait_http(f"http://127.0.0.1:{port}/healthz/live", timeout=30, child=web, log=log)
            load.closed_loop(target, concurrency=args.concurrency, seconds=1.0, warmup=0.5)
            for round_ in range(args.rounds):
                order = [(False, without), (True, with_zones)]
                for active, runs in order if round_ % 2 == 0 else order[::-1]:
                    quota_free([business.pk for business, _ in clients])
                    zones_activate(zone_ids=ids, active=active)
                    time.sleep(1.5)  # the web processes look at the airspace's version each second
                    label = "with zones" if active else "no zones  "
                    first = load.closed_loop(
                        warmup, concurrency=args.concurrency, seconds=WARMUP_AFTER_SWITCH,
                        warmup=0.0,
                    )  # fmt: skip
                    if active:
                        after_switch.append(first)
                    print(f"   {label}, just switched: {describe(first)}", flush=True)
                    result = load.closed_loop(
                        target, concurrency=args.concurrency, seconds=args.seconds, warmup=0.3
                    )
                    runs.append(result)
                    print(f"   {label}: {describe(result)}", flush=True)
    finally:
        zones_delete(zone_ids=ids)
    measured = ZonesEffect(without, with_zones, detours, len(bodies), after_switch)
    print(f"   with / without, median of rounds: {measured.ratio:.3f}", flush=True)
    return measured


# --- where the time goes ------------------------------------------------------------------


def layer_split(args: argparse.Namespace, keys: list[str], business_ids: list[Any]) -> None:
    """The request and the workflow in this process, profiled layer by layer."""
    import warnings

    from django.test import Client

    from deliveries.api import DeliveryIn, delivery_request_from
    from deliveries.services import delivery_create
    from portal.celery import app
    from workers.tasks import delivery_process

    count = 200
    print(f"\n== where the time goes, in this process ({machine_load()})", flush=True)
    forget_waiting()
    # The log lines are still formatted and written, as in gunicorn, but not onto this report.
    devnull = open(os.devnull, "w")  # noqa: SIM115 (closed with the process)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(devnull)
    # The web processes serve no static files either; the API does not need them collected.
    warnings.filterwarnings("ignore", "No directory at")
    clients = [Client(HTTP_AUTHORIZATION=f"Api-Key {key}", HTTP_HOST="127.0.0.1") for key in keys]
    bodies = [json.dumps(b) for b in delivery_bodies(count, seed=args.seed + 2)]

    def post(i: int) -> None:
        client = clients[i % len(clients)]
        response = client.post("/api/v1/deliveries", bodies[i], content_type="application/json")
        if response.status_code != 202:
            raise SystemExit(f"POST answered {response.status_code}: {response.content[:300]!r}")

    print("   POST /api/v1/deliveries (Django test client, no gunicorn):")
    for line in layers.profile(post, count, layers.REQUEST_LAYERS):
        print(f"     {line}", flush=True)

    ids: list[str] = []
    for body in delivery_bodies(count, seed=args.seed + 3):
        serializer = DeliveryIn(data=body)
        serializer.is_valid(raise_exception=True)
        request = delivery_request_from(serializer.validated_data)
        business_id = business_ids[len(ids) % len(business_ids)]
        ids.append(str(delivery_create(business_id=business_id, request=request).id))

    def workflow(i: int) -> None:
        delivery_process(ids[i])  # the task's body, called in this process

    print("   the workflow task's body (no Celery):")
    for line in layers.profile(workflow, count, layers.WORKFLOW_LAYERS):
        print(f"     {line}", flush=True)
    app.control.purge()  # the messages these made


# --- 3. drone choice --------------------------------------------------------------------------


@dataclass
class DroneChoice:
    p99_ms: float | None
    reserve_p99_ms: float | None
    returncode: int


def drone_choice(environ: dict[str, str], drones: int) -> DroneChoice:
    command = [sys.executable, str(BASE_DIR / "bench" / "drone_choice.py"), "--drones", str(drones)]
    print(f"\n== 3. drone choice ({machine_load()}): {shlex.join(command[1:])}", flush=True)
    completed = subprocess.run(
        command, cwd=BASE_DIR, env=environ, capture_output=True, text=True, timeout=900
    )
    output = completed.stdout + completed.stderr
    print("   " + output.strip().replace("\n", "\n   "), flush=True)

    def p99(name: str) -> float | None:
        """The worst p99 of the passes (drone_choice.py also runs with most drones booked)."""
        found = re.findall(rf"^{re.escape(name)}\s.*?p99\s+([\d.]+) ms", output, re.MULTILINE)
        return max(float(value) for value in found) if found else None

    return DroneChoice(
        p99("drone_plan_best"), p99("drone_reserve + drone_release"), completed.returncode
    )


# --- 5. and 6.: the simulator's capacity, live tracking ------------------------------------------


@dataclass
class Sub:
    """A bench script run as its own process: its summary rows, kept for the summary here."""

    rows: list[tuple[str, str, str, str]]
    returncode: int


def sub_bench(number: int, title: str, command: list[str], environ: dict[str, str]) -> Sub:
    print(f"\n== {number}. {title} ({machine_load()}): {shlex.join(command[1:])}", flush=True)
    completed = subprocess.run(
        command, cwd=BASE_DIR, env=environ, capture_output=True, text=True, timeout=1200
    )
    output = completed.stdout + completed.stderr
    print("   " + output.strip().replace("\n", "\n   "), flush=True)
    rows: list[tuple[str, str, str, str]] = []
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and cells[0] != "figure":
            if cells[0].startswith("polling"):
                # The alternative measured to choose server-sent events, not a target.
                cells[2:] = ["", "(compared)"]
            rows.append((cells[0], cells[1], cells[2], cells[3].replace("FAIL", "MISS")))
    simulator = re.search(r"reports/s achieved:\s+(\d+).*?target >= (\d+): (\w+)", output)
    if simulator:
        rows.append(
            ("simulator: reports/s, 1,000 drones", f"{simulator[1]}/s", f">= {simulator[2]}/s",
             simulator[3].replace("FAIL", "MISS"))
        )  # fmt: skip
    cores = re.search(r"simulator CPU:\s+([\d.]+) core.*?target < ([\d.]+): (\w+)", output)
    if cores:
        rows.append(
            ("simulator: CPU", f"{cores[1]} core", f"< {cores[2]} core",
             cores[3].replace("FAIL", "MISS"))
        )  # fmt: skip
    if completed.returncode != 0 and not rows:
        rows.append((title, f"exit {completed.returncode}", "", "MISS"))
    return Sub(rows, completed.returncode)


# --- the summary ------------------------------------------------------------------------------


# A stage change to `assigned` notes the drone ("drone FD-1042"); a flag (its drone lost
# contact, back to normal) is an event of the current status too, with the attention as its note.
ASSIGNED_NOTE = r"^drone [^ ]+$"


def assignment_events(business_ids: list[Any]) -> Any:
    """The stage changes to `assigned` of these businesses' deliveries (not the flags)."""
    from deliveries.models import Delivery, DeliveryEvent

    return DeliveryEvent.objects.filter(
        delivery__business_id__in=business_ids,
        status=Delivery.Status.ASSIGNED,
        note__regex=ASSIGNED_NOTE,
    )


def assigned_more_than_once(business_ids: list[Any]) -> tuple[int, int]:
    """Of these businesses' deliveries: how many were assigned more than once, and how many
    drones hold more than one delivery under way. Both 0 when nothing was lost to speed."""
    from django.db.models import Count

    from deliveries.lifecycle import FINISHED
    from deliveries.models import Delivery

    assigned_twice = (
        assignment_events(business_ids)
        .values("delivery_id")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .count()
    )
    drones_twice = (
        Delivery.objects.filter(business_id__in=business_ids, drone__isnull=False)
        .exclude(status__in=FINISHED)
        .values("drone_id")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .count()
    )
    return assigned_twice, drones_twice


def describe_memory(component: str, memory: list[tuple[str, float]]) -> str:
    each = ", ".join(f"{mib:.0f}" for _, mib in sorted(memory, key=lambda m: -m[1]))
    return (
        f"resident memory of the {component} processes: {sum(m for _, m in memory):.0f} MiB "
        f"({each} MiB); the chart's limit per pod {chart_memory_limit_mib(component):.0f} MiB"
    )


def memory_row(component: str, memory: list[tuple[str, float]]) -> tuple[str, str, str, str]:
    """A pod runs what the Procfile's line starts (the master and its worker processes)."""
    total = sum(mib for _, mib in memory)
    allowed = chart_memory_limit_mib(component) * (1 - MEMORY_SPARE)
    return (
        f"{component} pod resident memory ({len(memory)} processes)",
        f"{total:.0f} MiB",
        f"<= {allowed:.0f} MiB",
        verdict(bool(memory) and total <= allowed),
    )


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def summary(
    vendor: str,
    ingest: Ingestion | None,
    e2e: EndToEnd | None,
    choices: list[tuple[int, DroneChoice]],
    tele: Telemetry | None = None,
    subs: list[Sub] | None = None,
    zones: ZonesEffect | None = None,
) -> None:
    rows: list[tuple[str, str, str, str]] = []
    if ingest:
        ratio = ingest.ratio
        p99 = ingest.latency.percentile_ms(99)
        clean = (
            not ingest.latency.errors
            and not ingest.latency.skipped
            and all(set(r.statuses) <= {202} for r in ingest.real)
        )
        rows += [
            ("POST /api/v1/deliveries peak", f"{ingest.real_peak:.0f} req/s", "", ""),
            ("bare DRF endpoint peak", f"{ingest.bare_peak:.0f} req/s", "", ""),
            ("ingestion ratio (real / bare, median of rounds)", f"{ratio:.2f}",
             f">= {TARGET_RATIO}",
             verdict(ratio >= TARGET_RATIO and clean)),
            ("  CPU-cost ratio (bare / real)", f"{ingest.cpu_ratio:.2f}", "", ""),
            ("  the database's ceiling for its statement",
             f"{ingest.ceiling:.0f}/s" if ingest.ceiling else "n/a", "", ""),
            (f"p50 at {ingest.rate:.0f} req/s (open loop)",
             f"{ingest.latency.percentile_ms(50):.1f} ms", "", ""),
            (f"p99 at {ingest.rate:.0f} req/s (open loop)", f"{p99:.1f} ms",
             f"<= {TARGET_P99_MS:g} ms", verdict(p99 <= TARGET_P99_MS and clean)),
            memory_row("web", ingest.memory),
        ]  # fmt: skip
    if e2e:
        rows += [
            ("assigned/s, first to last", f"{e2e.rate:.0f}/s", f">= {TARGET_ASSIGNED_PER_S:g}/s",
             verdict(e2e.rate >= TARGET_ASSIGNED_PER_S and e2e.assigned == e2e.count)),
            ("assigned/s, from worker start", f"{e2e.rate_with_startup:.0f}/s", "", ""),
            ("each assigned once, no drone holding two",
             f"{e2e.assigned_twice} twice, {e2e.drones_twice} drones", "0 and 0",
             verdict(e2e.once)),
            memory_row("worker", e2e.memory),
        ]  # fmt: skip
    for drones, choice in choices:
        for name, value in (
            (f"drone_plan_best p99, {drones // 1000}k drones (worst pass)", choice.p99_ms),
            (f"drone_reserve+release p99, {drones // 1000}k drones", choice.reserve_p99_ms),
        ):
            rows.append(
                (
                    name,
                    f"{value:.2f} ms" if value is not None else "failed",
                    f"<= {TARGET_CHOICE_P99_MS:g} ms" if name.startswith("drone_plan") else "",
                    verdict(value is not None and value <= TARGET_CHOICE_P99_MS)
                    if name.startswith("drone_plan")
                    else "",
                )
            )
    if tele:
        clean = (
            set(tele.result.statuses) <= {200}
            and not tele.result.errors
            and tele.sent <= tele.distinct
        )
        rows += [
            ("telemetry reports accepted/s (batches of 100)", f"{tele.rate:.0f}/s",
             f">= {TARGET_TELEMETRY_PER_S:g}/s",
             verdict(tele.rate >= TARGET_TELEMETRY_PER_S and clean)),
            ("  web CPU per report", f"{tele.web_cpu_ms_per_report:.3f} ms", "", ""),
        ]  # fmt: skip
    if zones:
        clean = all(set(r.statuses) <= {202} and not r.errors for r in zones.with_zones)
        rows += [
            (f"POST with {BENCH_ZONES} zones / without (median of rounds)", f"{zones.ratio:.2f}",
             f">= {TARGET_ZONES_RATIO}", verdict(zones.ratio >= TARGET_ZONES_RATIO and clean)),
            ("  requests that need a detour", f"{zones.detours} of {zones.bodies}", "", ""),
            (f"  the first {WARMUP_AFTER_SWITCH:g} s after zones switch on (median)",
             f"{zones.after_switch_rate:.0f} req/s", "", ""),
        ]  # fmt: skip
    for sub in subs or []:
        rows += sub.rows
    rows.insert(0, ("figure", "measured", "target", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    print(f"\n== summary ({vendor}, {os.cpu_count()} CPUs, one run)")
    print(line)
    for number, row in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if number == 0:
            print(line)
    print(line)


# --- main -------------------------------------------------------------------------------------

# What `--skip` takes: the phases, by name.
PHASES = (
    "ingestion",
    "e2e",
    "layers",
    "choice",
    "telemetry",
    "simulator",
    "tracking",
    "airspace",
    "zones",
    "webhooks",
    "tracing",
    "scale",
    "system",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=1000, help="end-to-end deliveries")
    parser.add_argument("--seconds", type=float, default=3.0, help="per closed-loop round")
    parser.add_argument("--rounds", type=int, default=5, help="closed-loop rounds per endpoint")
    parser.add_argument("--concurrency", type=int, default=6, help="closed-loop connections")
    parser.add_argument("--open-seconds", type=float, default=8.0, help="open-loop duration")
    parser.add_argument("--e2e-timeout", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip", choices=PHASES, action="append")
    args = parser.parse_args()
    skip = set(args.skip or [])
    signal.signal(signal.SIGTERM, on_sigterm)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    for log in ("gunicorn.log", "worker.log"):
        (WORK_DIR / log).unlink(missing_ok=True)

    original = dict(os.environ)
    env = bench_environ(original)
    ingest = e2e = tele = zones = None
    choices: list[tuple[int, DroneChoice]] = []
    subs: list[Sub] = []
    vendor = "?"
    try:
        with django_for_bench(env) as (urls, vendor):
            targets_for(vendor)
            from django.db import connection

            from drones.geo import Point
            from drones.services import fleet_seed

            made = Made([], [], [])
            try:
                clients = api_clients(API_CLIENTS, "Bench API client")
                zone_clients = api_clients(API_CLIENTS, "Bench zones API client")
                e2e_businesses = api_clients(E2E_BUSINESSES, "Bench end to end")
                ceiling_clients = api_clients(100, "Bench database ceiling")
                made.business_ids += [
                    b.pk for b, _ in clients + zone_clients + e2e_businesses + ceiling_clients
                ]
                fleet = fleet_seed(
                    count=args.deliveries + max(500, args.deliveries // 2),
                    center=Point(*CENTER),
                    radius_km=FLEET_RADIUS_KM,
                    seed=args.seed,
                )
                made.drone_ids += fleet.drone_ids
                made.base_ids += [b.id for b in fleet.bases]  # always new bases
                print(
                    f"fleet: {len(fleet.drone_ids)} idle drones on {len(fleet.bases)} bases "
                    f"within {FLEET_RADIUS_KM:g} km",
                    flush=True,
                )
                if connection.vendor == "postgresql":
                    with connection.cursor() as cursor:
                        cursor.execute("ANALYZE")
                if "ingestion" not in skip:
                    vacuum_as_autovacuum_would()
                    ingest = ingestion(args, env, urls, [k for _, k in clients])
                    ingest.ceiling = database_ceiling(
                        env, [b.pk for b, _ in ceiling_clients], args.seconds
                    )
                if "e2e" not in skip:
                    vacuum_as_autovacuum_would()
                    e2e = end_to_end(args, env, urls, [b.pk for b, _ in e2e_businesses])
                if "telemetry" not in skip:
                    vacuum_as_autovacuum_would()
                    tele = telemetry(args, env, urls, fleet.drone_ids)
                if "zones" not in skip:
                    vacuum_as_autovacuum_would()
                    zones = zones_effect(args, env, urls, zone_clients, fleet.bases)
                if "layers" not in skip:
                    vacuum_as_autovacuum_would()
                    layer_split(args, [k for _, k in clients], [b.pk for b, _ in e2e_businesses])
            finally:
                if connection.vendor != "sqlite":
                    cleanup(made)
                connection.close()
        if "choice" not in skip:
            choices = [(drones, drone_choice(original, drones)) for drones in CHOICE_FLEETS]
        python = sys.executable
        if "simulator" not in skip:
            command = [python, str(BASE_DIR / "bench" / "simulator.py"), "--drones", "1000"]
            subs.append(sub_bench(5, "fleet simulator capacity", command, original))
        if "tracking" not in skip:
            command = [python, str(BASE_DIR / "bench" / "tracking.py"), "--trackers", "1000"]
            subs.append(sub_bench(6, "live tracking fan-out", command, original))
        if "airspace" not in skip:
            command = [python, str(BASE_DIR / "bench" / "airspace.py"), "--zones", "500"]
            subs.append(sub_bench(8, "route planning among 500 zones", command, original))
        if "webhooks" not in skip:
            command = [python, str(BASE_DIR / "bench" / "webhooks.py")]
            subs.append(sub_bench(9, "webhook fan-out", command, original))
        if "tracing" not in skip:
            command = [python, str(BASE_DIR / "bench" / "telemetry_cost.py")]
            subs.append(sub_bench(10, "ingestion with tracing on and off", command, original))
        if "scale" not in skip:
            command = [python, str(BASE_DIR / "bench" / "scale.py")]
            subs.append(sub_bench(11, "1,000,000 deliveries: lists and reads", command, original))
        if "system" not in skip:
            command = [python, str(BASE_DIR / "bench" / "system.py")]
            subs.append(sub_bench(12, "the system as make run starts it", command, original))
    except (KeyboardInterrupt, Stop):
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130
    finally:
        for leftover in WORK_DIR.glob(SQLITE_FILE.name + "*"):
            leftover.unlink()
    summary(vendor, ingest, e2e, choices, tele, subs, zones)
    return 0


if __name__ == "__main__":
    sys.exit(main())
