"""Webhook fan-out: events delivered per second to a local receiver, and its effect on
`POST /api/v1/deliveries` p99.

    .venv/bin/python bench/webhooks.py [--endpoints 20] [--deliveries 180] [--pairs 4]
                                       [--seconds 10] [--post-rate 50] [--timeout 100]

Everything in one run on this machine, stopped at the end (also on Ctrl-C): its own Redis and
MongoDB-protocol server, the database of DATABASE_URL (PostgreSQL) or a throwaway SQLite file
under .local/bench/, the web process (the Procfile's gunicorn), a Celery worker and celery beat
(the Procfile's command lines; beat's `workers.webhooks_dispatch` is the dispatcher),
production settings (DEBUG off) with WEBHOOK_ALLOW_PRIVATE=true in every process.

With DEBUG off, webhooks.services.url_check accepts only https URLs, and no setting allows
http (WEBHOOK_ALLOW_PRIVATE only lets a URL resolve to a private or loopback address). So the
receiver speaks TLS with a throwaway self-signed certificate for 127.0.0.1, which the started
processes trust through SSL_CERT_FILE: the sender runs its production path, TLS included.

1. Recording: a business with N endpoints (webhooks.services.webhook_endpoint_create, every
   stage event), M deliveries each moved through every stage by deliveries.lifecycle
   .delivery_move (so `assigned`, `picked_up`, `delivered` are recorded for each endpoint, 3 x N
   x M messages) while no worker runs; the endpoints are then switched off (the dispatcher
   passes over them, and a sender sends nothing to them) until a window with fan-out.
   The receiver (a ThreadingHTTPServer in a process of its own) answers 200 over HTTP/1.1
   keeping connections open, as the servers businesses run do (an HTTP/1.0 receiver would
   make every event a new TLS handshake on both sides), counts requests and distinct
   `webhook-id`s, and verifies a sample of signatures with
   `standardwebhooks.Webhook(secret).verify`.
2. POST p99: open loop at --post-rate per second against gunicorn, with the worker
   (concurrency 2) and beat running throughout and assigning the POSTs' deliveries, as in
   production, in --pairs pairs of --seconds windows, one with no webhook traffic and one
   while the fan-out runs, ordered ABBA (off on, on off, ...) so that a machine growing
   faster or slower weighs on both kinds alike. For a window with fan-out the endpoints are
   switched on in one UPDATE, the window starts once events flow, and they are switched off
   after it; the next window waits until no message is still claimed by a sender, and until
   the deliveries posted have been assigned. The median of the windows' p99s with fan-out is
   judged against the median of those without: within max(5 ms, 25 %, the spread of the
   windows without: the median of how far each fell from their median) is no effect beyond
   noise, PASS; else MISS. Earlier the windows of each kind were pooled, so that one window hit
   by a hiccup of the machine (once 206 ms against 45) swung the verdict or the noise allowed;
   before that, one window with fan-out was judged against one before and one after it.
3. The rest: the endpoints switched on for good, every message must arrive (as many distinct
   `webhook-id`s as messages, each delivered).

Figures: events delivered per second during the windows with fan-out (the POSTs and their
assignments running too) and during the rest (nothing else running); CPU per event by process
(bench/cpu.py) during those windows, and what the fan-out added per event: the CPU rate of
the windows with it less that of the windows without, over the events per second.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import multiprocessing
import os
import shlex
import signal
import ssl
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
    vacuum_as_autovacuum_would,
    wait_http,
)
from devtools.localservices import free_port  # noqa: E402

HOST = "127.0.0.1"
SQLITE_FILE = WORK_DIR / "webhooks.sqlite3"  # not run.py's: benches may run side by side
CERT_FILE = WORK_DIR / "webhooks-receiver-cert.pem"
KEY_FILE = WORK_DIR / "webhooks-receiver-key.pem"
VERIFY_EVERY = 20  # verify one request's signature in this many (and each endpoint's first)
NOISE_MS = 5.0
NOISE_FRACTION = 0.25


def certificate_make() -> None:
    """A self-signed certificate for 127.0.0.1, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench webhook receiver")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    CERT_FILE.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    KEY_FILE.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


# --- the receiver (a process of its own) ------------------------------------------------------


def receiver_process(port: int, secrets: dict[str, str], count: Any, stop: Any, out: Any) -> None:
    """Answer 200 to every POST on https://127.0.0.1:<port>/hooks/<n>, count them, verify a
    sample of signatures; when `stop` is set, send what it saw through `out`."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench stops it
    hooks = {path: Webhook(secret) for path, secret in secrets.items()}
    lock = threading.Lock()
    seen_ids: set[str] = set()
    first_of: set[str] = set()
    stats = {"requests": 0, "verified": 0, "bad": 0, "first": 0.0, "last": 0.0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            message_id = self.headers.get("webhook-id", "")
            with lock:
                stats["requests"] += 1
                number = int(stats["requests"])
                now = time.time()
                stats["first"] = stats["first"] or now
                stats["last"] = now
                seen_ids.add(message_id)
                check = number % VERIFY_EVERY == 0 or self.path not in first_of
                first_of.add(self.path)
            if check:
                hook = hooks.get(self.path)
                try:
                    if hook is None:
                        raise WebhookVerificationError("unknown endpoint")
                    hook.verify(body, dict(self.headers.items()))
                    key = "verified"
                except WebhookVerificationError:
                    key = "bad"
                with lock:
                    stats[key] += 1
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            with count.get_lock():
                count.value += 1

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128  # the sender opens a few connections per endpoint at once

    server = Server((HOST, port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERT_FILE, KEY_FILE)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stop.wait()
    server.shutdown()
    with lock:
        out.send({**stats, "distinct": len(seen_ids)})
    out.close()


# --- recording --------------------------------------------------------------------------------


def deliveries_fly(business_id: Any, drone_ids: list[Any], count: int) -> float:
    """`count` deliveries moved through every stage (each with its own drone); the seconds."""
    from deliveries.lifecycle import delivery_move
    from deliveries.models import Delivery
    from drones.models import Drone

    status = Delivery.Status
    stages = [
        status.ASSIGNED,
        status.EN_ROUTE_TO_PICKUP,
        status.AT_PICKUP,
        status.EN_ROUTE_TO_DROPOFF,
        status.AT_DROPOFF,
        status.DELIVERED,
    ]
    deliveries = Delivery.objects.bulk_create(
        Delivery(
            business_id=business_id,
            pickup_lat=body["pickup"]["lat"],
            pickup_lon=body["pickup"]["lon"],
            dropoff_lat=body["dropoff"]["lat"],
            dropoff_lon=body["dropoff"]["lon"],
            package_size=Delivery.Size.SMALL,
            package_weight_kg=body["package"]["weight_kg"],
        )
        for body in delivery_bodies(count, seed=21)
    )
    began = time.monotonic()
    for delivery, drone_id in zip(deliveries, drone_ids, strict=False):
        Drone.objects.filter(pk=drone_id, assigned_delivery_id=None).update(
            assigned_delivery_id=delivery.pk
        )
        eta = datetime.now(UTC) + timedelta(minutes=12)
        delivery_move(
            delivery,
            stages[0],
            changes={"drone_id": drone_id, "pickup_eta": eta, "dropoff_eta": eta},
        )
        for stage in stages[1:]:
            delivery_move(delivery, stage)
    return time.monotonic() - began


def settled(waiting: Any, *, what: str, timeout: float = 60.0) -> None:
    """Wait until the worker has assigned every delivery in `waiting` (a queryset)."""
    began = time.monotonic()
    while waiting.exists() and time.monotonic() - began < timeout:
        time.sleep(0.2)
    left = waiting.count()
    print(
        f"   {what} assigned after {time.monotonic() - began:.1f} s"
        + (f"; {left} still waiting" if left else ""),
        flush=True,
    )


# --- the windows ------------------------------------------------------------------------------


def window_order(pairs: int) -> list[bool]:
    """Windows without (False) and with (True) fan-out, in pairs ordered ABBA (off on, on off,
    off on, ...), so that a machine that speeds up or slows down during the run weighs on
    both kinds alike."""
    order: list[bool] = []
    for pair in range(pairs):
        order += [False, True] if pair % 2 == 0 else [True, False]
    return order


def merged(results: list[load.Result]) -> load.Result:
    """The requests of several windows as one sample."""
    together = load.Result(results[0].name if results else "", 0.0)
    for result in results:
        together.seconds += result.seconds
        together.statuses.update(result.statuses)
        together.latencies += result.latencies
        together.errors.update(result.errors)
        together.skipped += result.skipped
    return together


@dataclass
class Judged:
    base: float  # the median of the p99s of the windows without fan-out
    loaded: float  # the same of the windows with it
    spread: float  # how far the windows without fell from their median (the median of that)
    allowed: float
    quiet: list[float]  # each window's p99, without fan-out
    fan: list[float]  # and with it
    pooled: tuple[float, float]  # the p99 of all the windows without together, and with

    @property
    def effect(self) -> float:
        return self.loaded - self.base

    @property
    def ok(self) -> bool:
        return self.effect <= self.allowed


@dataclass
class Windows:
    """The POST windows run so far, with and without fan-out, and what the fan-out did in
    them."""

    quiet_runs: list[load.Result] = field(default_factory=list)
    fan_runs: list[load.Result] = field(default_factory=list)
    events: int = 0  # received during the windows with fan-out
    fan_seconds: float = 0.0
    leaked: int = 0  # received during the windows without
    usage: dict[str, float] = field(default_factory=dict)  # CPU seconds, windows with fan-out
    quiet_seconds: float = 0.0
    quiet_usage: dict[str, float] = field(default_factory=dict)  # the same, without

    def quiet(self, post: load.Target, args: argparse.Namespace, count: Any, group: Any) -> None:
        print(f"\n== POST at {args.post_rate:g}/s, no webhook traffic ({machine_load()})")
        began = count.value
        before = cpu.snapshot()
        result = load.open_loop(post, rate=args.post_rate, seconds=args.seconds)
        after = cpu.snapshot()
        self.leaked += count.value - began
        self.quiet_seconds += after.at - before.at
        cpu.add(self.quiet_usage, cpu.usage(before, after, group))
        self.quiet_runs.append(result)
        describe_post("no webhooks", result)

    def fan_out(
        self,
        post: load.Target,
        args: argparse.Namespace,
        endpoints: Any,
        count: Any,
        group: Any,
        leased: Any,
    ) -> None:
        """Switch the endpoints on, run the window once events flow, switch them off and wait
        until no sender holds a claim (a batch already being posted finishes; one still in
        the queue releases its messages)."""
        print(f"\n== POST at {args.post_rate:g}/s during fan-out ({machine_load()})")
        began = count.value
        switched = time.monotonic()
        endpoints.update(active=True)
        while count.value == began and time.monotonic() - switched < 30:
            time.sleep(0.05)
        print(f"   events flowing {time.monotonic() - switched:.1f} s after switching on")
        before, first = cpu.snapshot(), count.value
        result = load.open_loop(post, rate=args.post_rate, seconds=args.seconds)
        after, last = cpu.snapshot(), count.value
        endpoints.update(active=False)
        self.fan_runs.append(result)
        self.events += last - first
        self.fan_seconds += after.at - before.at
        cpu.add(self.usage, cpu.usage(before, after, group))
        describe_post("with fan-out", result)
        print(f"   {last - first} events received in the window", flush=True)
        sends_settled(count, leased)

    def extra_cpu(self) -> dict[str, float]:
        """CPU seconds per event that the fan-out added, by process group: the CPU rate of
        the windows with fan-out less that of the windows without, over the events/s."""
        if not self.fan_seconds or not self.quiet_seconds or not self.events:
            return {}
        rate = self.events / self.fan_seconds
        return {
            name: (
                self.usage.get(name, 0.0) / self.fan_seconds
                - self.quiet_usage.get(name, 0.0) / self.quiet_seconds
            )
            / rate
            for name in {*self.usage, *self.quiet_usage}
        }

    @property
    def clean(self) -> bool:
        return all(clean(run) for run in [*self.quiet_runs, *self.fan_runs])

    def judge(self) -> Judged:
        """The median of the windows' p99s with fan-out against that of the windows without:
        one window hit by a hiccup of the machine moves a median little, where it moved the
        p99 of the windows pooled (and, as the gap between their halves, the noise allowed)
        by as much as itself. The noise allowed is the larger of NOISE_MS, NOISE_FRACTION of
        the windows without, and their own spread in this very run (the median of how far
        each fell from their median)."""
        quiet = [run.percentile_ms(99) for run in self.quiet_runs]
        fan = [run.percentile_ms(99) for run in self.fan_runs]
        base = statistics.median(quiet)
        spread = statistics.median(abs(p99 - base) for p99 in quiet)
        allowed = max(NOISE_MS, NOISE_FRACTION * base, spread)
        pooled = (
            merged(self.quiet_runs).percentile_ms(99),
            merged(self.fan_runs).percentile_ms(99),
        )
        return Judged(base, statistics.median(fan), spread, allowed, quiet, fan, pooled)


def sends_settled(count: Any, leased: Any, *, timeout: float = 60.0) -> None:
    """Wait until no message is leased to a sender (`leased()`: whether one is; a batch
    claimed before the endpoints were switched off is posted if its sender had begun, else its
    messages are released) and no event has arrived for half a second."""
    began = last_change = time.monotonic()
    seen = count.value
    while time.monotonic() - began < timeout:
        time.sleep(0.1)
        if count.value != seen:
            seen, last_change = count.value, time.monotonic()
        elif time.monotonic() - last_change >= 0.5 and not leased():
            break
    print(f"   webhook traffic stopped {last_change - began:.1f} s after switching off")


# --- the summary ------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def describe_post(name: str, post: load.Result) -> None:
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(post.statuses.items()))
    errors = f"; errors {dict(post.errors)}" if post.errors else ""
    print(
        f"   {name}: POST /api/v1/deliveries at {post.completed / post.seconds:.0f}/s: "
        f"p50 {post.percentile_ms(50):.1f} ms, p99 {post.percentile_ms(99):.1f} ms "
        f"[{statuses}]{errors}{f'; {post.skipped} not sent' if post.skipped else ''}",
        flush=True,
    )


def clean(post: load.Result) -> bool:
    return not post.errors and not post.skipped and set(post.statuses) <= {202}


def summary(rows: list[tuple[str, str, str, str]], vendor: str) -> None:
    rows = [("figure", "measured", "target", ""), *rows]
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
    parser.add_argument("--endpoints", type=int, default=20)
    parser.add_argument("--deliveries", type=int, default=180)
    parser.add_argument("--pairs", type=int, default=4, help="of POST windows, without and with")
    parser.add_argument("--seconds", type=float, default=10.0, help="per POST window")
    parser.add_argument("--post-rate", type=float, default=50.0)
    parser.add_argument("--timeout", type=float, default=100.0, help="for the fan-out")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    logs = {name: WORK_DIR / f"webhooks-{name}.log" for name in ("web", "worker", "beat")}
    for log in logs.values():
        log.unlink(missing_ok=True)
    certificate_make()

    original = dict(os.environ)
    env = bench_environ(
        original,
        sqlite_file=SQLITE_FILE,
        WEBHOOK_ALLOW_PRIVATE="true",
        # The receiver's self-signed certificate is the only one these processes trust.
        SSL_CERT_FILE=str(CERT_FILE),
    )
    rows: list[tuple[str, str, str, str]] = []
    vendor = "?"
    context = multiprocessing.get_context("spawn")
    receiver: Any = None
    stop_receiver = context.Event()
    try:
        with django_for_bench(env) as (urls, vendor):
            from django.db import connection
            from django.utils import timezone

            from businesses.services import business_create
            from deliveries.models import Delivery
            from drones.geo import Point
            from drones.services import fleet_seed
            from portal.celery import app
            from webhooks.models import WebhookEndpoint, WebhookMessage
            from webhooks.services import STAGE_EVENTS, webhook_endpoint_create

            made = Made([], [], [])
            try:
                business, _ = business_create(name="Bench webhooks")
                made.business_ids.append(business.pk)
                # + the warm-up, a closed loop of 1.5 s: as many as the machine serves in that time.
                posts = int(2 * args.pairs * args.post_rate * args.seconds) + 1000
                fleet = fleet_seed(
                    count=args.deliveries + posts,
                    center=Point(*CENTER),
                    radius_km=FLEET_RADIUS_KM,
                    seed=7,
                )
                made.drone_ids += fleet.drone_ids
                made.base_ids += [b.id for b in fleet.bases]

                receiver_port = free_port()
                secrets: dict[str, str] = {}
                for number in range(args.endpoints):
                    path = f"/hooks/{number}"
                    endpoint = webhook_endpoint_create(
                        business_id=business.pk,
                        url=f"https://{HOST}:{receiver_port}{path}",
                        events=list(STAGE_EVENTS.values()),
                    )
                    secrets[path] = endpoint.secret
                print(
                    f"\n== recording ({machine_load()}): {args.endpoints} endpoints, "
                    f"{args.deliveries} deliveries through every stage",
                    flush=True,
                )
                spent = deliveries_fly(business.pk, fleet.drone_ids, args.deliveries)
                expected = WebhookMessage.objects.filter(endpoint__business_id=business.pk).count()
                # Held back until the fan-out: the dispatcher passes over inactive endpoints.
                endpoints = WebhookEndpoint.objects.filter(business_id=business.pk)
                endpoints.update(active=False)
                vacuum_as_autovacuum_would()  # after the recording's writes
                print(
                    f"   {args.deliveries * 6} stage changes in {spent:.1f} s "
                    f"({args.deliveries * 6 / spent:.0f}/s); {expected} webhook messages "
                    f"recorded",
                    flush=True,
                )

                count = context.Value("i", 0)
                results, sender = context.Pipe(duplex=False)
                receiver = context.Process(
                    target=receiver_process,
                    args=(receiver_port, secrets, count, stop_receiver, sender),
                    daemon=True,
                )
                receiver.start()
                sender.close()

                # The POSTs come from many businesses (without endpoints), each under the
                # per-business limits.
                callers = api_clients(50, "Bench webhooks API client")
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
                web_port = free_port()
                post.port = web_port
                web_argv = procfile_command("web", WEB_PORT=str(web_port))
                worker_argv = procfile_command("worker")
                beat_schedule = WORK_DIR / "webhooks-celerybeat-schedule"
                beat_schedule.unlink(missing_ok=True)
                beat_argv = procfile_command("beat")
                beat_argv[beat_argv.index("--schedule") + 1] = str(beat_schedule)
                print(f"web:    {shlex.join(web_argv[-9:])} (log: {logs['web']})", flush=True)
                with process(web_argv, env=env, log=logs["web"]) as web:
                    wait_http(f"http://{HOST}:{web_port}/healthz/live", timeout=30,
                              child=web, log=logs["web"])  # fmt: skip
                    app.control.purge()  # what the recording queued: not this bench's work
                    load.closed_loop(post, concurrency=2, seconds=1.0, warmup=0.5)  # warm up
                    print(f"worker: {shlex.join(worker_argv[1:])} (log: {logs['worker']})")
                    print(f"beat:   {shlex.join(beat_argv[1:])} (log: {logs['beat']})", flush=True)
                    callers_ids = [caller.pk for caller, _ in callers]
                    waiting = Delivery.objects.filter(
                        business_id__in=callers_ids, status=Delivery.Status.REQUESTED
                    )
                    with (
                        process(worker_argv, env=env, log=logs["worker"]) as worker,
                        process(beat_argv, env=env, log=logs["beat"]) as beat,
                    ):
                        # Every window with the worker and beat at work on the POSTs' own
                        # deliveries, as always in production: only the webhooks differ.
                        settled(waiting, what="the warm-up's deliveries")
                        group = grouper(
                            urls, worker=worker.pid, beat=beat.pid, web=web.pid,
                            receiver=receiver.pid,
                        )  # fmt: skip
                        windows = Windows()
                        in_flight = WebhookMessage.objects.filter(
                            endpoint__business_id=business.pk,
                            status=WebhookMessage.Status.PENDING,
                        )

                        def leased() -> bool:
                            return in_flight.filter(next_attempt_at__gt=timezone.now()).exists()

                        for fanning in window_order(args.pairs):
                            if fanning:
                                windows.fan_out(post, args, endpoints, count, group, leased)
                            else:
                                windows.quiet(post, args, count, group)
                            settled(waiting, what="its deliveries")
                        ran_dry = count.value >= expected
                        print(
                            f"\n== the rest of the fan-out ({count.value} of {expected} "
                            f"received so far; {machine_load()})",
                            flush=True,
                        )
                        endpoints.update(active=True)
                        deadline = time.monotonic() + args.timeout
                        rest = count.value
                        while count.value == rest and time.monotonic() < deadline:
                            time.sleep(0.02)
                        rest, rest_began = count.value, time.monotonic()
                        while count.value < expected and time.monotonic() < deadline:
                            time.sleep(0.02)
                        alone = (count.value - rest) / max(time.monotonic() - rest_began, 1e-9)
                        print(
                            f"   {count.value - rest} events in "
                            f"{time.monotonic() - rest_began:.1f} s with no POSTs: "
                            f"{alone:.0f} events/s",
                            flush=True,
                        )
                        time.sleep(1.0)  # a duplicate would come now, and be counted
                    stop_receiver.set()
                    seen: dict[str, Any] = results.recv() if results.poll(10) else {}
                delivered = WebhookMessage.objects.filter(
                    endpoint__business_id=business.pk, status=WebhookMessage.Status.DELIVERED
                ).count()
                received = int(seen.get("requests", count.value))
                distinct = int(seen.get("distinct", 0))
                rate = windows.events / windows.fan_seconds if windows.fan_seconds else 0.0
                worker_cpu = windows.usage.get("worker", 0.0)
                print(
                    f"   {received} requests received ({distinct} distinct webhook-ids), "
                    f"{delivered} of {expected} messages delivered; during the POST windows "
                    f"with fan-out, {windows.events} events in {windows.fan_seconds:.1f} s: "
                    f"{rate:.0f} events/s",
                    flush=True,
                )
                print(
                    f"   signatures verified: {seen.get('verified', 0)} good, "
                    f"{seen.get('bad', 0)} bad",
                    flush=True,
                )
                print(
                    "   "
                    + cpu.describe(
                        windows.usage, wall=windows.fan_seconds, per=max(1, windows.events),
                        unit="event",
                    ),
                    flush=True,
                )  # fmt: skip

                print(
                    "   windows without fan-out: "
                    + cpu.describe(
                        windows.quiet_usage, wall=windows.quiet_seconds,
                        per=max(1, sum(run.completed for run in windows.quiet_runs)),
                        unit="POST",
                    ),
                    flush=True,
                )  # fmt: skip
                extra = sorted(windows.extra_cpu().items(), key=lambda item: -item[1])
                print(
                    "   CPU ms per event the fan-out added (windows with it less those without): "
                    + ", ".join(f"{name} {1000 * seconds:+.2f}" for name, seconds in extra),
                    flush=True,
                )
                verdict_p99 = windows.judge()
                print(
                    "   POST p99 by window, without fan-out: "
                    + ", ".join(f"{p99:.1f}" for p99 in verdict_p99.quiet)
                    + " ms; with it: "
                    + ", ".join(f"{p99:.1f}" for p99 in verdict_p99.fan)
                    + f" ms; all windows pooled: {verdict_p99.pooled[0]:.1f} without, "
                    f"{verdict_p99.pooled[1]:.1f} with",
                    flush=True,
                )
                all_in = delivered == expected == distinct
                rows += [
                    (f"webhook events delivered/s ({args.endpoints} endpoints), no POSTs",
                     f"{alone:.0f}/s", "", ""),
                    (f"  while POST runs at {args.post_rate:g}/s", f"{rate:.0f}/s", "", ""),
                    ("  events delivered (distinct webhook-ids)", f"{delivered} of {expected} "
                     f"({distinct})", "all", verdict(all_in)),
                    ("  signatures verified (sample)",
                     f"{seen.get('verified', 0)} good, {seen.get('bad', 0)} bad", "all good",
                     verdict(bool(seen.get("verified")) and not seen.get("bad"))),
                    ("  CPU the fan-out added per event", ", ".join(
                        f"{name} {1000 * seconds:.2f} ms" for name, seconds in extra[:3]), "", ""),
                    ("  worker CPU, windows with fan-out",
                     f"{100 * worker_cpu / max(windows.fan_seconds, 1e-9):.0f} % of a core", "",
                     ""),
                    (f"POST p99 at {args.post_rate:g}/s, no webhooks (median of {args.pairs} "
                     "windows)", f"{verdict_p99.base:.1f} ms (spread {verdict_p99.spread:.1f})",
                     "", ""),
                    (f"POST p99 at {args.post_rate:g}/s, during fan-out (median of {args.pairs})",
                     f"{verdict_p99.loaded:.1f} ms ({verdict_p99.effect:+.1f} ms)",
                     f"<= +{verdict_p99.allowed:.1f} ms",
                     verdict(verdict_p99.ok and windows.clean and not windows.leaked
                             and not ran_dry)),
                ]  # fmt: skip
                if ran_dry:
                    print("   the messages ran out before the last window did", flush=True)
                if windows.leaked:
                    print(
                        f"   {windows.leaked} events arrived in windows without fan-out",
                        flush=True,
                    )
            finally:
                stop_receiver.set()
                if receiver is not None:
                    receiver.join(timeout=10)
                    if receiver.is_alive():
                        receiver.terminate()
                        receiver.join()
                if connection.vendor != "sqlite":
                    from webhooks.models import WebhookEndpoint

                    WebhookEndpoint.objects.filter(business_id__in=made.business_ids).delete()
                    cleanup(made)
                connection.close()
    except (KeyboardInterrupt, Stop):
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130
    finally:
        for leftover in WORK_DIR.glob(SQLITE_FILE.name + "*"):
            leftover.unlink()
        for leftover in (CERT_FILE, KEY_FILE):
            leftover.unlink(missing_ok=True)
    summary(rows, vendor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
