"""The system as `make run` starts it, under a steady stream of deliveries for a minute.

    .venv/bin/python bench/system.py [--rate 150] [--seconds 60] [--drones N] [--grace 5]

Issue 14: web, worker, beat, live and simulator together, on the embedded defaults, accept and
assign >= 150 deliveries per second for a minute without falling behind.

The system is started with `make run`'s own command, `python -m devtools.localservices run --
python -m devtools.devrun` (its Redis and MongoDB-protocol server, migrate, load_demo, then every
Procfile process under honcho), with `make run`'s environment (DEBUG=true, WEB_PORT,
PUBLIC_BASE_URL) and nothing else: no DATABASE_URL, REDIS_URL, MONGODB_URI or broker URL, so
SQLite and the Redis broker, the embedded defaults. `make run` keeps its state in the checkout's
.local/ (the SQLite file, the beat schedule, the heartbeats, services.env), so the bench runs
it from a copy of the working tree in a temporary folder: the same code, its own .local/, its
own ports; a `make run` or the user's dev database are never touched. Everything started is
stopped at the end (SIGTERM to localservices, which stops the rest as on Ctrl-C; whatever
outlives that is killed), also on Ctrl-C or SIGTERM, and the folder is removed.

Once every process answers, the bench adds (through the services, as `manage.py` in another
terminal would): businesses with an API key each, enough for every business to stay under
BUSINESS_MAX_ACTIVE_DELIVERIES (default 100; no limit is raised), and a fleet of idle drones
around Oslo (`fleet_seed`, bench/run.py's area), one per delivery to come: at the simulator's
real-time speed a trip takes minutes, so no drone comes back within the minute. It waits until
the simulator flies the new fleet, sends a 2-s warm-up (other businesses, not counted), then
`POST /api/v1/deliveries` at --rate per second, open loop (bench/load.py), for --seconds.

Measured: requests accepted (202) per second, other answers, p50/p99 latency (from when each
request was due); from the delivery events, assignments per second (per 10-s window and over
the run) and each delivery's wait from stored to assigned; what is still waiting --grace
seconds after the last request and when the last assignment came. Falling behind is defined
as: fewer than --rate * --seconds assigned within --grace s of the last request (assigned/s
over the run below the rate), any delivery still `requested` then, or any delivery flagged
because its drone lost contact (the telemetry of the fleet no longer taken in time: its drones
then hear of their deliveries late, if at all, and operators are told they are lost). Also
where the CPU went (bench/cpu.py, by process) and each process's resident memory at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench import cpu, load  # noqa: E402
from bench.run import (  # noqa: E402
    CENTER,
    FLEET_RADIUS_KM,
    Stop,
    assigned_more_than_once,
    assignment_events,
    chart_memory_limit_mib,
    delivery_bodies,
    keyed_requests,
    machine_load,
    on_sigterm,
)

READY_TIMEOUT_S = 240.0
WARMUP_S = 2.0
WINDOW_S = 10.0
# Under the per-business limit of active deliveries by this share (the warm-up's are apart).
LIMIT_SHARE = 0.75
# What `make run` puts in the environment or reads from it to find its services and ports: the
# bench sets its own, so that the system runs on the embedded defaults on ports of its own.
NOT_INHERITED = (
    "DATABASE_URL", "REDIS_URL", "MONGODB_URI", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE",
    "WEB_PORT", "LIVE_PORT", "LIVE_BASE_URL", "LIVE_ALLOW_ORIGIN", "PUBLIC_BASE_URL",
    "FLEET_SIM_API_URL", "TELEMETRY_KEY", "WORKER_HEARTBEAT_FILE", "SIMULATOR_HEARTBEAT_FILE",
    "FABRIKAM_IGNORE_LOCAL_SERVICES_FILE",
)  # fmt: skip
COMPONENTS = (
    # (name, a part of the command line), first match wins; honcho's `sh -c` wrappers included.
    ("web", "gunicorn"),
    ("worker", " worker "),
    ("beat", " beat "),
    ("live", "uvicorn"),
    ("simulator", "simulate_fleet"),
    ("redis", "redis-server"),
    ("mongodb", "nx-27017"),
)
SIMULATOR_LINE = re.compile(
    r"fleet simulator: (\d+) drones, (\d+) flying, (\d+) reports/s, (\d+) errors, "
    r"(\d+) refused, (\d+) ms per request"
)


# --- the system -------------------------------------------------------------------------------


def two_free_ports() -> int:
    """A port whose next one is free too (the live process listens on WEB_PORT + 1)."""
    for _ in range(100):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise SystemExit("no two free consecutive ports on 127.0.0.1")


def copy_working_tree(target: Path) -> int:
    """The checkout's files as they are now (tracked and new, not ignored: no .local, .venv)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=BASE_DIR, capture_output=True, check=True,
    ).stdout  # fmt: skip
    copied = 0
    for name in filter(None, listed.decode().split("\0")):
        source = BASE_DIR / name
        if not source.is_file():  # deleted in the working tree
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)
        copied += 1
    return copied


def system_environ(port: int) -> dict[str, str]:
    """`make run`'s environment: the caller's, with the Makefile's exports."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        {
            "DEBUG": "true",
            "WEB_PORT": str(port),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@dataclass
class System:
    root: Path  # the copy of the working tree
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def wait_until_up(system: System) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if system.process.poll() is not None:
            raise SystemExit(
                f"the system exited with {system.process.returncode}:\n{system.tail()}"
            )
        text = system.log_text()
        if "every process answers" in text:
            return
        if "still do not answer" in text:
            raise SystemExit(f"the system started, but not every process answers:\n{system.tail()}")
        time.sleep(0.5)
    raise SystemExit(f"the system did not answer within {READY_TIMEOUT_S:.0f} s:\n{system.tail()}")


def tree(root: int) -> dict[int, str]:
    """pid -> command line of `root` and every process below it."""
    snap = cpu.snapshot()
    return {pid: cmd for pid, cmd in snap.command.items() if cpu.descends_from(snap, pid, root)}


def stop_system(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to localservices, as Ctrl-C on `make run` (it stops devrun, honcho and every
    process, then its servers); whatever still runs after that is killed."""
    started = tree(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=45)
    if process.poll() is None:
        process.kill()
        process.wait()
    for pid, command in started.items():
        try:
            still = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone
        if still == command:  # the same process, not a new one that took its number
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                print(f"killed a leftover process {pid}: {command[:80]}", flush=True)


@contextlib.contextmanager
def system_running(keep: bool) -> Iterator[System]:
    folder = Path(tempfile.mkdtemp(prefix="fabrikam-system-bench-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        files = copy_working_tree(folder)
        port = two_free_ports()
        log = folder / "make-run.log"
        python = sys.executable
        argv = [
            python,
            "-m",
            "devtools.localservices",
            "run",
            "--",
            python,
            "-m",
            "devtools.devrun",
        ]
        print(
            f"system: {' '.join(argv[1:])} (make run) in a copy of the working tree "
            f"({files} files, {folder}), port {port}; log {log.name}",
            flush=True,
        )
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv, cwd=folder, env=system_environ(port), stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        system = System(folder, port, log, process)
        began = time.monotonic()
        wait_until_up(system)
        print(f"system: every process answers after {time.monotonic() - began:.0f} s", flush=True)
        yield system
    finally:
        if process is not None:
            stop_system(process)
        if keep:
            print(f"kept {folder}", flush=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def django_on(system: System) -> None:
    """Django in this process on the system's database and services, as `manage.py` in another
    terminal would find them (.local/services.env of the copy)."""
    services = system.root / ".local" / "services.env"
    pairs = (line.split("=", 1) for line in services.read_text().splitlines() if "=" in line)
    os.environ.update({key.strip(): value.strip() for key, value in pairs})
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DEBUG": "true",
            "DATABASE_URL": f"sqlite:///{system.root / '.local' / 'db.sqlite3'}",
            # Not the checkout's services.env: the URLs are set above.
            "FABRIKAM_IGNORE_LOCAL_SERVICES_FILE": "true",
        }
    )
    import django

    django.setup()


# --- the world --------------------------------------------------------------------------------


@dataclass
class World:
    keys: list[str]
    business_ids: list[Any]
    warmup_keys: list[str]
    warmup_business_ids: list[Any]
    drones: int
    bases: int


def seed_world(args: argparse.Namespace, count: int, warmup: int) -> World:
    from django.conf import settings

    from businesses.services import business_create
    from drones.geo import Point
    from drones.models import Drone
    from drones.services import fleet_seed

    limit = settings.BUSINESS_MAX_ACTIVE_DELIVERIES
    each = max(1, int(limit * LIMIT_SHARE)) if limit else count
    made = [business_create(name=f"System bench {i}") for i in range(math.ceil(count / each))]
    warm = [business_create(name=f"System bench warm-up {i}") for i in range(
        math.ceil(warmup / each))]  # fmt: skip
    drones = args.drones if args.drones is not None else math.ceil((count + warmup) * 1.05)
    fleet = fleet_seed(count=drones, center=Point(*CENTER), radius_km=FLEET_RADIUS_KM, seed=1)
    print(
        f"seeded: {len(made)} businesses with an API key each (at most {each} deliveries each, "
        f"BUSINESS_MAX_ACTIVE_DELIVERIES={limit}) and {len(warm)} for the warm-up; "
        f"{len(fleet.drone_ids)} idle drones on {len(fleet.bases)} bases within "
        f"{FLEET_RADIUS_KM:g} km of Oslo {CENTER} (fleet_seed); the fleet now has "
        f"{Drone.objects.count()} drones",
        flush=True,
    )
    return World(
        [k for _, k in made], [b.pk for b, _ in made], [k for _, k in warm],
        [b.pk for b, _ in warm], Drone.objects.count(), len(fleet.bases),
    )  # fmt: skip


def simulator_lines(system: System) -> list[tuple[int, ...]]:
    return [tuple(int(g) for g in m.groups()) for m in SIMULATOR_LINE.finditer(system.log_text())]


def wait_for_simulator(system: System, drones: int, timeout: float = 45.0) -> None:
    """Until the simulator's summary (every 10 s) counts the whole fleet."""
    seen = len(simulator_lines(system))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = simulator_lines(system)[seen:]
        if any(line[0] >= drones for line in lines):
            print(f"simulator: flies all {drones} drones", flush=True)
            return
        time.sleep(0.5)
    print(f"simulator: not yet counting all {drones} drones after {timeout:.0f} s", flush=True)


# --- the measurement --------------------------------------------------------------------------


def waiting_and_assigned(business_ids: list[Any]) -> tuple[int, int, int]:
    """(stored, still requested, assigned at least once) of these businesses' deliveries."""
    from deliveries.models import Delivery

    mine = Delivery.objects.filter(business_id__in=business_ids)
    stored = mine.count()
    waiting = mine.filter(status=Delivery.Status.REQUESTED).count()
    assigned = assignment_events(business_ids).values("delivery_id").distinct().count()
    return stored, waiting, assigned


@dataclass
class Progress:
    """What a thread reads from the database every second while the load runs."""

    business_ids: list[Any]
    began: float
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        from django.db import connection

        try:
            next_print = WINDOW_S
            while not self.stop.wait(1.0):
                stored, waiting, assigned = waiting_and_assigned(self.business_ids)
                at = time.time() - self.began
                self.samples.append((at, stored, waiting, assigned))
                if at >= next_print:
                    print(
                        f"   {at:5.1f} s: {stored} stored, {assigned} assigned, "
                        f"{waiting} waiting ({machine_load()})",
                        flush=True,
                    )
                    next_print += WINDOW_S
        finally:
            connection.close()


def drain(business_ids: list[Any], expected: int, last_request: float, grace: float) -> int:
    """Poll until nothing is waiting (or no progress for 20 s, or 60 s); the number still
    waiting `grace` s after the last request."""
    at_grace: int | None = None
    last_change = time.monotonic()
    before = -1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stored, waiting, assigned = waiting_and_assigned(business_ids)
        if at_grace is None and time.time() >= last_request + grace:
            at_grace = waiting
        if waiting == 0 and stored >= expected and at_grace is not None:
            break
        if assigned != before:
            before, last_change = assigned, time.monotonic()
        elif time.monotonic() - last_change > 20:
            print(f"   no assignment for 20 s with {waiting} waiting; stopped waiting", flush=True)
            break
        time.sleep(0.25)
    return at_grace if at_grace is not None else -1


@dataclass
class Assignments:
    stored: int
    assigned_in_time: int
    assigned: int
    by_status: dict[str, int]
    windows: list[float]  # assigned/s per window of the run
    waits: list[float]  # seconds from stored to assigned
    last_after_last_request: float | None
    twice: int
    drones_twice: int
    flagged: int  # deliveries whose drone was marked lost (no telemetry for a while)


def assignments(
    business_ids: list[Any], began: float, seconds: float, last_request: float, grace: float
) -> Assignments:
    from django.db.models import Min

    from deliveries.models import Delivery, DeliveryEvent

    mine = Delivery.objects.filter(business_id__in=business_ids)
    created = dict(mine.values_list("pk", "created_at"))
    events = assignment_events(business_ids)  # not the flags
    first = dict(
        events.values("delivery_id").annotate(at=Min("at")).values_list("delivery_id", "at")
    )
    times = sorted(at.timestamp() for at in first.values())
    windows = []
    start = began
    while start < began + seconds - 1e-6:
        end = min(start + WINDOW_S, began + seconds)
        windows.append(sum(1 for t in times if start <= t < end) / (end - start))
        start = end
    waits = [(first[pk] - created[pk]).total_seconds() for pk in first if pk in created]
    twice, drones_twice = assigned_more_than_once(business_ids)
    by_status = Counter(mine.values_list("status", flat=True))
    flagged = (
        DeliveryEvent.objects.filter(
            delivery__business_id__in=business_ids, note__contains="lost contact"
        )
        .values("delivery_id")
        .distinct()
        .count()
    )
    return Assignments(
        stored=len(created),
        assigned_in_time=sum(1 for t in times if t <= last_request + grace),
        assigned=len(times),
        by_status=dict(by_status),
        windows=windows,
        waits=waits,
        last_after_last_request=(times[-1] - last_request) if times else None,
        twice=twice,
        drones_twice=drones_twice,
        flagged=flagged,
    )


def component(command: str) -> str:
    for name, part in COMPONENTS:
        if part in f" {command} ":
            return name
    return "supervisors (localservices, devrun, honcho)"


def grouper(root: int) -> Any:
    me = os.getpid()

    def group(snap: cpu.Snapshot, pid: int) -> str:
        if pid == me:
            return "bench client"
        if cpu.descends_from(snap, pid, root):
            return component(snap.command.get(pid, ""))
        return "other processes"

    return group


def memory(root: int) -> dict[str, list[float]]:
    """Resident MiB of each process of the system, by component (honcho's shells left out)."""
    found: dict[str, list[float]] = {}
    for command, mib in cpu.resident_mib(root):
        if command.startswith(("/bin/sh", "sh ")):
            continue
        found.setdefault(component(command), []).append(mib)
    return found


def percentile(values: list[float], pct: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def row(figure: str, measured: str, target: str, ok: bool | None) -> str:
    verdict = "" if ok is None else ("PASS" if ok else "MISS")
    return f"| {figure} | {measured} | {target} | {verdict} |"


# --- main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=150.0, help="deliveries per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to send")
    parser.add_argument(
        "--drones", type=int, default=None, help="drones to seed (default: one per delivery + 5%%)"
    )
    parser.add_argument(
        "--grace", type=float, default=5.0, help="seconds after the last request by which "
        "every delivery must be assigned (default 5)"
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and log")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    count = int(args.rate * args.seconds)
    warmup = int(args.rate * WARMUP_S)
    print(f"system bench: {args.rate:g}/s for {args.seconds:g} s ({machine_load()})", flush=True)
    try:
        with system_running(args.keep) as system:
            django_on(system)
            from django.db import connection

            try:
                return measure(args, system, count, warmup)
            finally:
                connection.close()
    except (KeyboardInterrupt, Stop):
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130


def measure(args: argparse.Namespace, system: System, count: int, warmup: int) -> int:
    world = seed_world(args, count, warmup)
    wait_for_simulator(system, world.drones)
    bodies = [json.dumps(b).encode() for b in delivery_bodies(count + warmup, seed=14)]
    path = "/api/v1/deliveries"
    warm = load.Target(
        "warm-up", system.port, keyed_requests(path, bodies[:warmup], world.warmup_keys)
    )
    real = load.Target("deliveries", system.port, keyed_requests(path, bodies[warmup:], world.keys))
    warmed = load.open_loop(warm, rate=args.rate, seconds=WARMUP_S)
    drain(world.warmup_business_ids, warmup, time.time(), args.grace)
    print(
        f"warm-up: {warmup} requests in {WARMUP_S:g} s, {dict(warmed.statuses)}, p99 "
        f"{warmed.percentile_ms(99):.0f} ms; all assigned before the run",
        flush=True,
    )
    simulator_before = len(simulator_lines(system))

    print(
        f"\n== {count} x POST {path}, {args.rate:g}/s open loop for {args.seconds:g} s "
        f"({machine_load()})",
        flush=True,
    )
    group = grouper(system.process.pid)
    began = time.time() + 0.05  # open_loop's first request is due 50 ms after it starts
    progress = Progress(world.business_ids, began)
    poller = threading.Thread(target=progress.run, daemon=True)
    cpu_before = cpu.snapshot()
    poller.start()
    try:
        result = load.open_loop(real, rate=args.rate, seconds=args.seconds)
    finally:
        progress.stop.set()
        poller.join()
    cpu_after = cpu.snapshot()
    last_request = began + (count - 1) / args.rate
    accepted = result.statuses.get(202, 0)
    waiting_at_grace = drain(world.business_ids, accepted, last_request, args.grace)
    cpu_drained = cpu.snapshot()
    done = assignments(world.business_ids, began, args.seconds, last_request, args.grace)
    mem = memory(system.process.pid)
    sim = simulator_lines(system)[simulator_before:]

    others = {code: n for code, n in result.statuses.items() if code != 202}
    trouble = [f"{n} x HTTP {code}" for code, n in sorted(others.items())]
    trouble += [f"{n} x {name}" for name, n in result.errors.items()]
    if result.skipped:
        trouble.append(f"{result.skipped} not sent (256 outstanding)")
    print(
        f"   answers: {accepted} x 202 of {count}{'; ' + ', '.join(trouble) if trouble else ''}; "
        f"latency p50 {result.percentile_ms(50):.1f} ms, p99 {result.percentile_ms(99):.1f} ms, "
        f"max {1000 * max(result.latencies, default=0):.0f} ms; client CPU "
        f"{result.client_cpu_pct:.0f} %",
        flush=True,
    )
    windows = ", ".join(f"{w:.0f}" for w in done.windows)
    last = done.last_after_last_request
    print(
        f"   assigned/s per {WINDOW_S:g}-s window: {windows}; {done.assigned} of {done.stored} "
        f"stored assigned, {done.assigned_in_time} within {args.grace:g} s of the last request; "
        f"the last {'never' if last is None else f'{last:.1f} s after the last request'}; "
        f"statuses {done.by_status}",
        flush=True,
    )
    if done.waits:
        print(
            f"   wait from stored to assigned: p50 {percentile(done.waits, 50):.2f} s, p99 "
            f"{percentile(done.waits, 99):.2f} s, max {max(done.waits):.2f} s; "
            f"{done.twice} assigned twice, {done.drones_twice} drones holding two; "
            f"{done.flagged} flagged because their drone lost contact (no telemetry for "
            f"DRONE_LOST_AFTER_SECONDS)",
            flush=True,
        )
    for drones, flying, reports, errors, refused, ms in sim:
        print(
            f"   simulator: {drones} drones, {flying} flying, {reports} reports/s, "
            f"{errors} errors, {refused} refused, {ms} ms per request of 250 reports",
            flush=True,
        )
    wall = cpu_after.at - cpu_before.at
    split = cpu.usage(cpu_before, cpu_after, group)
    print(
        f"   {cpu.describe(split, wall=wall, per=max(1, accepted), unit='delivery')} "
        f"(while sending)",
        flush=True,
    )
    share = ", ".join(
        f"{name} {seconds / wall:.2f}"
        for name, seconds in sorted(split.items(), key=lambda i: -i[1])
    )
    print(f"   cores busy: {share}", flush=True)
    # The worker's share over sending and draining (its backlog is worked off then) per
    # delivery assigned; the rest over sending per delivery accepted.
    worker = cpu.usage(cpu_before, cpu_drained, group).get("worker", 0.0)
    rest = sum(v for k, v in split.items() if k not in ("worker", "other processes"))
    if accepted and done.assigned:
        per = worker / done.assigned + rest / accepted
        print(
            f"   CPU per delivery of the system and the bench client: {1000 * per:.1f} ms "
            f"(worker {1000 * worker / done.assigned:.1f} ms per assignment, sending through "
            f"draining; the rest while sending), so at most {(os.cpu_count() or 1) / per:.0f} "
            f"deliveries/s on {os.cpu_count()} CPUs with the machine to itself",
            flush=True,
        )
    for name, mibs in sorted(mem.items()):
        limit = ""
        if name in ("web", "worker"):
            limit = f"; the chart's limit per pod {chart_memory_limit_mib(name):.0f} MiB"
        each = ", ".join(f"{m:.0f}" for m in sorted(mibs, reverse=True))
        print(f"   resident memory, {name}: {sum(mibs):.0f} MiB ({each}){limit}", flush=True)

    target = args.rate
    clean = not trouble
    assigned_rate = done.assigned_in_time / args.seconds
    in_time = done.assigned_in_time >= count and waiting_at_grace == 0
    label = f"system (make run), {target:g}/s for {args.seconds:g} s"
    print(f"\n== summary ({machine_load()})")
    print(row("figure", "measured", "target", None))
    print(row(
        f"{label}: accepted/s", f"{accepted / args.seconds:.1f}/s ({accepted} x 202)",
        f">= {target:g}/s, all 202", accepted >= count and clean,
    ))  # fmt: skip
    print(row(
        "  POST p50 / p99 (open loop)",
        f"{result.percentile_ms(50):.0f} / {result.percentile_ms(99):.0f} ms", "", None,
    ))  # fmt: skip
    print(row(
        f"{label}: assigned/s (within {args.grace:g} s of the last request)",
        f"{assigned_rate:.1f}/s", f">= {target:g}/s", assigned_rate >= target,
    ))  # fmt: skip
    lowest = min(done.windows, default=0.0)
    print(row(f"  lowest {WINDOW_S:g}-s window of assignments", f"{lowest:.0f}/s", "", None))
    print(row(
        f"{label}: waiting {args.grace:g} s after the last request",
        f"{max(0, waiting_at_grace)}; last assigned "
        + ("never" if last is None else f"+{last:.1f} s"),
        "0", in_time,
    ))  # fmt: skip
    slowest = min((int(reports) for _, _, reports, *_ in sim), default=None)
    print(row(
        f"{label}: deliveries whose drone lost contact",
        f"{done.flagged} (the simulator at "
        + ("no summary yet" if slowest is None else f"{slowest} reports/s at its slowest") + ")",
        "0", done.flagged == 0,
    ))  # fmt: skip
    print(row(
        "  each assigned once, no drone holding two",
        f"{done.twice} twice, {done.drones_twice} drones", "0 and 0",
        done.twice == 0 and done.drones_twice == 0,
    ))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
