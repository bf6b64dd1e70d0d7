"""Live tracking: server-sent events from the `live` process against polling the web process.

    .venv/bin/python bench/tracking.py [--trackers 1000] [--deliveries 100] [--seconds 12]
                                       [--post-rate 50]

The issue says "server-sent events or cheap polling: measure and choose". Everything in one run
on this machine, stopped at the end (also on Ctrl-C): its own Redis and MongoDB-protocol server,
the database of DATABASE_URL (PostgreSQL) or a throwaway SQLite file under .local/bench/, the
web process (the Procfile's gunicorn) and the live process (the Procfile's uvicorn), production
settings (DEBUG off). It stores a business and N deliveries, then a publisher in this process
writes every delivery's live status once a second, spread over the second, through
deliveries.live.statuses_write (the versioned copy in Redis and the PUBLISH, as telemetry does),
each document stamped with the time it describes (drone_location.at).

(a) Server-sent events: T trackers (a separate client process: asyncio, raw sockets), spread
    over the deliveries, each one feed of GET /live/track/<token> from the live process.
(b) Polling: the same trackers each GET /live/track/<token>.json from the web process once a
    second (open loop: a poll not answered before the next is due skips that one).

Each phase has a quiet window (trackers only: where the CPU per tracker-update is measured) and
a loaded one (trackers and POST /api/v1/deliveries at --post-rate per second, open loop: its
p99); the same POST load runs once first with no trackers, for what the machine gives anyway.
Staleness is measured two ways: the lag of each update (received minus the time it describes),
and what each tracker shows, sampled every 0.25 s (now minus the time of the newest position it
has): the target is that no tracker is ever more than 2 s behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import shlex
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench import cpu, load  # noqa: E402
from bench.run import (  # noqa: E402
    CENTER,
    FLEET_RADIUS_KM,
    WORK_DIR,
    Made,
    Stop,
    api_clients,
    bench_environ,
    cleanup,
    delivery_bodies,
    django_for_bench,
    grouper,
    keyed_requests,
    machine_load,
    on_sigterm,
    process,
    procfile_command,
    wait_http,
)
from devtools.localservices import free_port  # noqa: E402

HOST = "127.0.0.1"
TARGET_BEHIND_S = 2.0
TARGET_POST_P99_MS = 50.0
SAMPLE_EVERY_S = 0.25
PUBLISH_SLOTS = 20  # the second is cut in 20 slots; each delivery is written in one of them
# Not bench/run.py's file: the two benches may run side by side.
SQLITE_FILE = WORK_DIR / "tracking.sqlite3"


# --- the trackers (a process of their own) ----------------------------------------------------


@dataclass
class Tracker:
    path: str
    newest: float = 0.0  # the time described by the newest position this tracker has
    ready: bool = False


@dataclass
class Seen:
    """What the tracker process saw: (received at, lag) per update, sampled view ages."""

    updates: list[tuple[float, float]] = field(default_factory=list)
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # at, p99, max
    latencies: list[tuple[float, float]] = field(default_factory=list)  # polls: at, seconds
    errors: dict[str, int] = field(default_factory=dict)
    ready: int = 0
    skipped: int = 0
    cpu_seconds: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def _described_time(document: dict[str, Any]) -> float | None:
    location = document.get("drone_location") or {}
    at = location.get("at")
    return datetime.fromisoformat(at).timestamp() if isinstance(at, str) else None


def _request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nAccept: */*\r\n\r\n".encode()


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, block = head.partition(b"\r\n")
    headers = {}
    for line in block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(b" ", 2)[1]), headers


async def _follow(tracker: Tracker, port: int, seen: Seen, gate: asyncio.Semaphore) -> None:
    """One server-sent events feed, read until the server or the bench closes it."""
    async with gate:  # connect in waves, as a thousand browsers would not all at once
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(_request(tracker.path))
            status, headers = await _head(reader)
        except (OSError, asyncio.IncompleteReadError) as exc:
            seen.error(type(exc).__name__)
            return
    if status != 200 or headers.get(b"transfer-encoding") != b"chunked":
        seen.error(f"HTTP {status}")
        writer.close()
        return
    buffer = b""
    try:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                seen.error("feed ended")
                return
            buffer += (await reader.readexactly(size + 2))[:-2]
            while b"\n\n" in buffer:
                block, _, buffer = buffer.partition(b"\n\n")
                start = block.find(b"data: ")
                if start < 0:
                    continue  # a keepalive comment
                received = time.time()
                described = _described_time(json.loads(block[start + 6 :].split(b"\n", 1)[0]))
                if not tracker.ready:
                    tracker.ready = True
                    seen.ready += 1
                if described is not None:
                    tracker.newest = max(tracker.newest, described)
                    seen.updates.append((received, received - described))
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        seen.error(type(exc).__name__)
    finally:
        writer.close()


async def _poll(tracker: Tracker, port: int, seen: Seen, phase: float) -> None:
    """GET the status once a second, each poll due at a fixed time (open loop)."""
    loop = asyncio.get_running_loop()
    request = _request(tracker.path)
    due = loop.time() + phase
    while True:
        await asyncio.sleep(max(0.0, due - loop.time()))
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            try:
                writer.write(request)
                status, headers = await _head(reader)
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
            finally:
                writer.close()
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            seen.error(type(exc).__name__)
        else:
            received = time.time()
            seen.latencies.append((received, loop.time() - due))
            if status != 200:
                seen.error(f"HTTP {status}")
            else:
                described = _described_time(json.loads(body))
                if not tracker.ready:
                    tracker.ready = True
                    seen.ready += 1
                if described is not None:
                    tracker.newest = max(tracker.newest, described)
                    seen.updates.append((received, received - described))
        due += 1.0
        late = loop.time() - due
        if late > 0:  # the answer took longer than a second: the polls due meanwhile are lost
            missed = int(late) + 1
            seen.skipped += missed
            due += missed


async def _trackers(
    mode: str, port: int, paths: list[str], ready: Any, stop_at: Any, seen: Seen
) -> None:
    trackers = [Tracker(path) for path in paths]
    gate = asyncio.Semaphore(100)
    far = time.time() + 3600
    if mode == "sse":
        tasks = [asyncio.create_task(_follow(t, port, seen, gate)) for t in trackers]
    else:
        rng = random.Random(7)
        tasks = [asyncio.create_task(_poll(t, port, seen, rng.random())) for t in trackers]
    announced = False
    while (stop_at.value or far) > time.time():
        await asyncio.sleep(SAMPLE_EVERY_S)
        if not announced and seen.ready + sum(seen.errors.values()) >= len(trackers):
            ready.set()
            announced = True
        if announced:
            now = time.time()
            ages = sorted(now - t.newest for t in trackers if t.newest)
            if ages:
                seen.samples.append((now, ages[int(0.99 * (len(ages) - 1))], ages[-1]))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def trackers_process(
    mode: str, port: int, paths: list[str], ready: Any, stop_at: Any, results: Any
) -> None:
    """The tracker client, in a process of its own so that its CPU and its event loop's lag
    stay out of the server's figures and of the POST client's latencies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench stops it
    seen = Seen()
    began = time.process_time()
    asyncio.run(_trackers(mode, port, paths, ready, stop_at, seen))
    seen.cpu_seconds = time.process_time() - began
    results.send(seen)
    results.close()


# --- the publisher ----------------------------------------------------------------------------


class Publisher(threading.Thread):
    """Every delivery's live status written once a second (each in its own slot of the
    second), stamped with the time it describes, through the telemetry's write path."""

    def __init__(self, deliveries: list[Any]) -> None:
        super().__init__(daemon=True)
        self.deliveries = deliveries
        self.stopping = threading.Event()
        self.written = 0
        self.rng = random.Random(3)

    def run(self) -> None:
        from deliveries import live

        slots: list[list[Any]] = [[] for _ in range(PUBLISH_SLOTS)]
        for number, delivery in enumerate(self.deliveries):
            slots[number % PUBLISH_SLOTS].append(delivery)
        began = time.monotonic()
        tick = 0
        while not self.stopping.is_set():
            delay = began + tick / PUBLISH_SLOTS - time.monotonic()
            if delay > 0:
                self.stopping.wait(delay)
            now = datetime.now(UTC)
            writes = []
            for delivery in slots[tick % PUBLISH_SLOTS]:
                location = {
                    "lat": CENTER[0] + self.rng.uniform(-0.02, 0.02),
                    "lon": CENTER[1] + self.rng.uniform(-0.02, 0.02),
                    "alt_m": 60.0,
                    "heading": 90.0,
                    "ground_speed_mps": 15.0,
                    "at": now.isoformat(),
                }
                document = live.status_of(delivery, location)
                writes.append((delivery.id, delivery.version, now, document))
            live.statuses_write(writes)
            self.written += len(writes)
            tick += 1


# --- one phase --------------------------------------------------------------------------------


@dataclass
class Window:
    name: str
    began: float
    ended: float
    cpu: dict[str, float]
    post: load.Result | None = None

    @property
    def wall(self) -> float:
        return self.ended - self.began


@dataclass
class Phase:
    name: str
    mode: str
    trackers: int
    seen: Seen
    windows: list[Window]

    def inside(self, window: Window) -> list[tuple[float, float]]:
        return [u for u in self.seen.updates if window.began <= u[0] <= window.ended]

    def lags(self) -> list[float]:
        return sorted(lag for w in self.windows for _, lag in self.inside(w))

    def behind_max(self) -> float:
        ages = [s[2] for w in self.windows for s in self.seen.samples if w.began <= s[0] <= w.ended]
        return max(ages) if ages else float("inf")

    def behind_p99(self) -> float:
        """The median over the samples of the 99th-percentile tracker's age."""
        ages = [s[1] for w in self.windows for s in self.seen.samples if w.began <= s[0] <= w.ended]
        return statistics.median(ages) if ages else float("inf")


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(pct / 100 * len(ordered)))]


def run_phase(
    name: str,
    mode: str,
    *,
    port: int,
    paths: list[str],
    args: argparse.Namespace,
    group: Any,
    post: load.Target,
    publisher: Publisher,
) -> Phase:
    context = multiprocessing.get_context("spawn")
    ready, stop_at = context.Event(), context.Value("d", 0.0)
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=trackers_process, args=(mode, port, paths, ready, stop_at, sender), daemon=True
    )
    child.start()
    sender.close()
    windows: list[Window] = []
    try:
        started = time.monotonic()
        if not ready.wait(timeout=args.ramp_timeout):
            print(f"   not every tracker connected within {args.ramp_timeout:g} s", flush=True)
        print(f"   {len(paths)} trackers ready in {time.monotonic() - started:.1f} s", flush=True)
        time.sleep(1.5)  # let the last ones see a published update
        stop_at.value = time.time() + 2 * args.seconds + 60  # the pollers' horizon
        for window_name in ("quiet", f"with POST at {args.post_rate:g}/s"):
            before = cpu.snapshot()
            began = time.time()
            result = None
            if window_name == "quiet":
                time.sleep(args.seconds)
            else:
                result = load.open_loop(post, rate=args.post_rate, seconds=args.seconds)
            ended = time.time()
            after = cpu.snapshot()
            usage = cpu.usage(before, after, group(child.pid))
            windows.append(Window(window_name, began, ended, usage, result))
        stop_at.value = time.time()
        seen: Seen = receiver.recv() if receiver.poll(30) else Seen()
    finally:
        stop_at.value = time.time()
        child.join(timeout=10)
        if child.is_alive():
            child.terminate()
            child.join()
    print(f"   publisher: {publisher.written} statuses written so far", flush=True)
    return Phase(name, mode, len(paths), seen, windows)


def describe_post(post: load.Result) -> dict[str, float]:
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(post.statuses.items()))
    print(
        f"   POST /api/v1/deliveries at {post.completed / post.seconds:.0f}/s: "
        f"p50 {post.percentile_ms(50):.1f} ms, p99 {post.percentile_ms(99):.1f} ms "
        f"[{statuses}]{'; errors ' + str(dict(post.errors)) if post.errors else ''}",
        flush=True,
    )
    clean = not post.errors and not post.skipped and set(post.statuses) <= {202}
    return {"post_p99_ms": post.percentile_ms(99), "post_clean": float(clean)}


def describe_phase(phase: Phase, server: str) -> dict[str, float]:
    """Print the phase's figures; return the ones the summary needs."""
    lags = phase.lags()
    seen = phase.seen
    print(
        f"   update lag (received minus described), {len(lags)} updates: "
        f"p50 {1000 * percentile(lags, 50):.0f} ms, p99 {1000 * percentile(lags, 99):.0f} ms, "
        f"max {1000 * (max(lags) if lags else float('nan')):.0f} ms",
        flush=True,
    )
    print(
        f"   what trackers show, sampled every {SAMPLE_EVERY_S:g} s: worst tracker "
        f"{phase.behind_max():.2f} s behind; the 99th percentile tracker "
        f"{phase.behind_p99():.2f} s (median of samples)",
        flush=True,
    )
    if seen.errors or seen.skipped:
        print(f"   tracker errors {seen.errors}, polls skipped {seen.skipped}", flush=True)
    figures: dict[str, float] = {}
    for window in phase.windows:
        updates = len(phase.inside(window))
        spent = window.cpu
        server_cpu = spent.get(server, 0.0) + spent.get("redis", 0.0)
        server_cpu += spent.get("postgresql", 0.0)
        line = cpu.describe(spent, wall=window.wall, per=max(1, updates), unit="tracker-update")
        print(
            f"   {window.name}: {updates / window.wall:.0f} tracker-updates/s; {line}", flush=True
        )
        if window.post is not None:
            figures.update(describe_post(window.post))
        else:
            figures["updates_per_s"] = updates / window.wall
            figures["server_ms_per_update"] = 1000 * server_cpu / max(1, updates)
            figures["app_ms_per_update"] = 1000 * spent.get(server, 0.0) / max(1, updates)
            figures["app_cpu_pct"] = 100 * spent.get(server, 0.0) / window.wall
            figures["client_ms_per_update"] = 1000 * spent.get("trackers", 0.0) / max(1, updates)
    figures["lag_p50_ms"] = 1000 * percentile(lags, 50)
    figures["lag_p99_ms"] = 1000 * percentile(lags, 99)
    figures["lag_max_ms"] = 1000 * (max(lags) if lags else float("inf"))
    figures["behind_max_s"] = phase.behind_max()
    figures["ready"] = seen.ready
    return figures


# --- the summary ------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def summary(
    vendor: str,
    trackers: int,
    baseline: dict[str, float],
    sse: dict[str, float],
    poll: dict[str, float],
) -> None:
    rows: list[tuple[str, str, str, str]] = [("figure", "measured", "target", "")]
    if baseline:
        p99 = baseline["post_p99_ms"]
        rows.append(
            ("no trackers: POST /api/v1/deliveries p99", f"{p99:.1f} ms",
             f"<= {TARGET_POST_P99_MS:g} ms",
             verdict(p99 <= TARGET_POST_P99_MS and bool(baseline["post_clean"])))
        )  # fmt: skip
    for name, figures in (("SSE", sse), ("polling 1/s", poll)):
        if not figures:
            continue
        behind = figures["behind_max_s"]
        rows += [
            (f"{name}: trackers connected", f"{figures['ready']:.0f} of {trackers}", "all",
             verdict(figures["ready"] >= trackers)),
            (f"{name}: update lag p50 / p99 / max",
             f"{figures['lag_p50_ms']:.0f} / {figures['lag_p99_ms']:.0f} / "
             f"{figures['lag_max_ms']:.0f} ms", "", ""),
            (f"{name}: worst tracker behind", f"{behind:.2f} s", f"<= {TARGET_BEHIND_S:g} s",
             verdict(behind <= TARGET_BEHIND_S)),
            (f"{name}: server CPU per tracker-update",
             f"{figures['server_ms_per_update']:.3f} ms", "", ""),
            (f"{name}: app process CPU", f"{figures['app_cpu_pct']:.0f} % of a core "
             f"({figures['app_ms_per_update']:.3f} ms/update)", "", ""),
            (f"{name}: POST /api/v1/deliveries p99", f"{figures['post_p99_ms']:.1f} ms",
             f"<= {TARGET_POST_P99_MS:g} ms",
             verdict(figures["post_p99_ms"] <= TARGET_POST_P99_MS and bool(figures["post_clean"]))),
        ]  # fmt: skip
    if sse and poll and sse["server_ms_per_update"] > 0:
        ratio = poll["server_ms_per_update"] / sse["server_ms_per_update"]
        rows.append(
            ("server CPU per update, polling / SSE", f"{ratio:.1f}x",
             "", "SSE cheaper" if ratio > 1 else "polling cheaper")
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    print(f"\n== summary ({vendor}, {os.cpu_count()} CPUs, {machine_load()}, one run)")
    print(line)
    for number, row in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if number == 0:
            print(line)
    print(line)


# --- main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trackers", type=int, default=1000)
    parser.add_argument("--deliveries", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=12.0, help="per window (two a phase)")
    parser.add_argument("--post-rate", type=float, default=50.0)
    parser.add_argument("--ramp-timeout", type=float, default=30.0)
    parser.add_argument("--skip", choices=["sse", "poll"], action="append")
    args = parser.parse_args()
    skip = set(args.skip or [])
    signal.signal(signal.SIGTERM, on_sigterm)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    for log in ("tracking-web.log", "tracking-live.log"):
        (WORK_DIR / log).unlink(missing_ok=True)

    original = dict(os.environ)
    env = bench_environ(original, sqlite_file=SQLITE_FILE)
    baseline: dict[str, float] = {}
    sse: dict[str, float] = {}
    poll: dict[str, float] = {}
    vendor = "?"
    try:
        with django_for_bench(env) as (urls, vendor):
            from django.db import connection

            from businesses.services import business_create
            from deliveries.models import Delivery
            from drones.geo import Point
            from drones.services import fleet_seed

            made = Made([], [], [])
            try:
                business, _ = business_create(name="Bench tracking")
                made.business_ids.append(business.pk)
                fleet = fleet_seed(
                    count=300, center=Point(*CENTER), radius_km=FLEET_RADIUS_KM, seed=5
                )
                made.drone_ids += fleet.drone_ids
                made.base_ids += [b.id for b in fleet.bases]
                deliveries = Delivery.objects.bulk_create(
                    Delivery(
                        business=business,
                        status=Delivery.Status.EN_ROUTE_TO_DROPOFF,
                        pickup_lat=CENTER[0],
                        pickup_lon=CENTER[1],
                        dropoff_lat=CENTER[0] + 0.01,
                        dropoff_lon=CENTER[1] + 0.01,
                        package_size=Delivery.Size.SMALL,
                        package_weight_kg=1.0,
                    )
                    for _ in range(args.deliveries)
                )
                tokens = [d.tracking_token for d in deliveries]
                followed = [tokens[i % len(tokens)] for i in range(args.trackers)]
                # The POSTs come from many businesses, each under the per-business limits.
                callers = api_clients(50, "Bench tracking API client")
                made.business_ids += [caller.pk for caller, _ in callers]
                post = load.Target(
                    "post",
                    0,
                    keyed_requests(
                        "/api/v1/deliveries",
                        [json.dumps(body).encode() for body in delivery_bodies(200, seed=11)],
                        [key for _, key in callers],
                    ),
                )
                web_port, live_port = free_port(), free_port()
                post.port = web_port
                web_argv = procfile_command("web", WEB_PORT=str(web_port))
                live_argv = procfile_command("live", LIVE_PORT=str(live_port))
                web_log, live_log = WORK_DIR / "tracking-web.log", WORK_DIR / "tracking-live.log"
                print(f"web:  {shlex.join(web_argv[-9:])} (log: {web_log})", flush=True)
                print(f"live: {shlex.join(live_argv[-11:])} (log: {live_log})", flush=True)
                with (
                    process(web_argv, env=env, log=web_log) as web,
                    process(live_argv, env=env, log=live_log) as live_server,
                ):
                    wait_http(f"http://{HOST}:{web_port}/healthz/live", timeout=30,
                              child=web, log=web_log)  # fmt: skip
                    wait_http(f"http://{HOST}:{live_port}/healthz/live", timeout=30,
                              child=live_server, log=live_log)  # fmt: skip
                    load.closed_loop(post, concurrency=2, seconds=1.0, warmup=0.5)  # warm up

                    def group(trackers_pid: int) -> Any:
                        return grouper(
                            urls, live=live_server.pid, web=web.pid, trackers=trackers_pid
                        )

                    publisher = Publisher(deliveries)
                    publisher.start()
                    try:
                        time.sleep(1.2)  # every delivery has a published status
                        print(
                            f"\n== baseline: POST at {args.post_rate:g}/s, no trackers "
                            f"({machine_load()})",
                            flush=True,
                        )
                        result = load.open_loop(post, rate=args.post_rate, seconds=args.seconds)
                        baseline = describe_post(result)
                        if "sse" not in skip:
                            print(
                                f"\n== (a) server-sent events: {args.trackers} trackers on "
                                f"{args.deliveries} deliveries, 1 update/s each "
                                f"({machine_load()})",
                                flush=True,
                            )
                            phase = run_phase(
                                "sse", "sse", port=live_port,
                                paths=[f"/live/track/{t}" for t in followed],
                                args=args, group=group, post=post, publisher=publisher,
                            )  # fmt: skip
                            sse = describe_phase(phase, "live")
                        if "poll" not in skip:
                            print(
                                f"\n== (b) polling: {args.trackers} trackers each GET "
                                f"/live/track/<token>.json from the web process once a second "
                                f"({machine_load()})",
                                flush=True,
                            )
                            phase = run_phase(
                                "poll", "poll", port=web_port,
                                paths=[f"/live/track/{t}.json" for t in followed],
                                args=args, group=group, post=post, publisher=publisher,
                            )  # fmt: skip
                            poll = describe_phase(phase, "web")
                    finally:
                        publisher.stopping.set()
                        publisher.join(timeout=5)
            finally:
                if connection.vendor != "sqlite":
                    cleanup(made)
                connection.close()
    except (KeyboardInterrupt, Stop):
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130
    finally:
        for leftover in WORK_DIR.glob(SQLITE_FILE.name + "*"):
            leftover.unlink()
    summary(vendor, args.trackers, baseline, sse, poll)
    return 0


if __name__ == "__main__":
    sys.exit(main())
