"""Webhook fan-out: events delivered per second to a local receiver, and its effect on
`POST /api/v1/deliveries` p99.

    .venv/bin/python bench/webhooks.py [--endpoints 20] [--deliveries 100] [--seconds 20]
                                       [--post-rate 50] [--timeout 100]

Everything in one run on this machine, stopped at the end (also on Ctrl-C): its own Redis and
MongoDB-protocol server, the database of DATABASE_URL (PostgreSQL) or a throwaway SQLite file
under .local/bench/, the web process (the Procfile's gunicorn), a Celery worker and celery beat
(the Procfile's command lines; beat's `workers.webhooks_dispatch` is the dispatcher),
production settings (DEBUG off) with WEBHOOK_ALLOW_PRIVATE=true in every process.

With DEBUG off, webhooks.services.url_check accepts only https URLs, and no setting allows
http (WEBHOOK_ALLOW_PRIVATE only lets a URL resolve to a private or loopback address). So the
receiver speaks TLS with a throwaway self-signed certificate for 127.0.0.1, which the started
processes trust through SSL_CERT_FILE: the sender runs its production path, TLS included.

1. Fan-out: a business with N endpoints (webhooks.services.webhook_endpoint_create, every
   stage event), M deliveries each moved through every stage by deliveries.lifecycle
   .delivery_move (so `assigned`, `picked_up`, `delivered` are recorded for each endpoint, 3 x N
   x M messages) while no worker runs; the endpoints are then switched off (the dispatcher
   passes over them) until the fan-out, when they are switched on in one UPDATE.
   The receiver (a ThreadingHTTPServer in a process of its own) answers 200 over HTTP/1.1
   keeping connections open, as the servers businesses run do (an HTTP/1.0 receiver would
   make every event a new TLS handshake on both sides), counts requests and distinct
   `webhook-id`s, and verifies a sample of signatures with
   `standardwebhooks.Webhook(secret).verify`. Figures: events delivered per second, first to
   last receipt, and the worker processes' CPU (bench/cpu.py).
2. POST p99: open loop at --post-rate per second against gunicorn, with the worker
   (concurrency 2) and beat running throughout and assigning the POSTs' deliveries, as in
   production: first with no webhook traffic, then while the fan-out runs, each window
   starting once the one before has been assigned, and once more with no webhook traffic
   after the fan-out. "Beyond noise" is judged as: the p99 with fan-out is within
   max(5 ms, 25 %, the two windows without webhooks' difference) of those two windows' mean:
   PASS, else MISS. (Earlier the baseline ran with no worker at all, so the fan-out's window
   also bore the worker's start-up and the POSTs' own assignments.)
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
import sys
import threading
import time
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
    parser.add_argument("--deliveries", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0, help="per POST window")
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
                posts = int(3 * args.post_rate * args.seconds) + 200
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
                        # Both windows with the worker and beat at work on the POSTs' own
                        # deliveries, as always in production: only the webhooks differ.
                        settled(waiting, what="the warm-up's deliveries")
                        print(
                            f"\n== baseline: POST at {args.post_rate:g}/s, worker and beat "
                            f"running, no webhook traffic ({machine_load()})",
                            flush=True,
                        )
                        baseline = load.open_loop(post, rate=args.post_rate, seconds=args.seconds)
                        describe_post("baseline", baseline)
                        settled(waiting, what="the baseline's deliveries")
                        print(
                            f"\n== fan-out: {expected} messages to {args.endpoints} endpoints "
                            f"({machine_load()})",
                            flush=True,
                        )
                        group = grouper(
                            urls, worker=worker.pid, beat=beat.pid, web=web.pid,
                            receiver=receiver.pid,
                        )  # fmt: skip
                        started = time.monotonic()
                        endpoints.update(active=True)
                        while count.value == 0 and time.monotonic() - started < 30:
                            time.sleep(0.05)
                        before = cpu.snapshot()
                        first_at = time.monotonic()
                        print(
                            f"   first event received {first_at - started:.1f} s after the "
                            "endpoints were switched on",
                            flush=True,
                        )
                        loaded = load.open_loop(post, rate=args.post_rate, seconds=args.seconds)
                        during = count.value
                        describe_post("with fan-out", loaded)
                        print(
                            f"   {during} of {expected} events received by the end of that window",
                            flush=True,
                        )
                        deadline = started + args.timeout
                        while count.value < expected and time.monotonic() < deadline:
                            time.sleep(0.1)
                        after = cpu.snapshot()
                        wall = time.monotonic() - first_at
                        usage = cpu.usage(before, after, group)
                        settled(waiting, what="the fan-out window's deliveries")
                        print(
                            f"\n== baseline again, the fan-out over ({machine_load()})",
                            flush=True,
                        )
                        again = load.open_loop(post, rate=args.post_rate, seconds=args.seconds)
                        describe_post("baseline again", again)
                    stop_receiver.set()
                    seen: dict[str, Any] = results.recv() if results.poll(10) else {}
                delivered = WebhookMessage.objects.filter(
                    endpoint__business_id=business.pk, status=WebhookMessage.Status.DELIVERED
                ).count()
                received = int(seen.get("requests", count.value))
                span = seen.get("last", 0.0) - seen.get("first", 0.0)
                rate = received / span if span > 0 else 0.0
                worker_cpu = usage.get("worker", 0.0)
                print(
                    f"   {received} requests received ({seen.get('distinct', '?')} distinct "
                    f"webhook-ids), {delivered} of {expected} messages delivered, in "
                    f"{span:.1f} s first to last: {rate:.0f} events/s",
                    flush=True,
                )
                print(
                    f"   signatures verified: {seen.get('verified', 0)} good, "
                    f"{seen.get('bad', 0)} bad",
                    flush=True,
                )
                print(
                    "   " + cpu.describe(usage, wall=wall, per=max(1, received), unit="event"),
                    flush=True,
                )

                # The fan-out's window against the mean of the windows before and after it;
                # the noise is the larger of NOISE_MS, NOISE_FRACTION of that mean, and how far
                # the two windows without webhooks fell apart in this very run.
                before_p99, after_p99 = baseline.percentile_ms(99), again.percentile_ms(99)
                base_p99 = (before_p99 + after_p99) / 2
                loaded_p99 = loaded.percentile_ms(99)
                spread = abs(before_p99 - after_p99)
                allowed = max(NOISE_MS, NOISE_FRACTION * base_p99, spread)
                all_in = delivered == expected and received >= expected
                rows += [
                    (f"webhook events delivered/s ({args.endpoints} endpoints)",
                     f"{rate:.0f}/s", "", ""),
                    ("  events delivered", f"{delivered} of {expected}", "all",
                     verdict(all_in)),
                    ("  signatures verified (sample)",
                     f"{seen.get('verified', 0)} good, {seen.get('bad', 0)} bad", "all good",
                     verdict(bool(seen.get("verified")) and not seen.get("bad"))),
                    ("  worker CPU", f"{100 * worker_cpu / wall:.0f} % of a core "
                     f"({1000 * worker_cpu / max(1, received):.2f} ms/event)", "", ""),
                    (f"POST p99 at {args.post_rate:g}/s, no webhooks (before, after)",
                     f"{base_p99:.1f} ms ({before_p99:.1f}, {after_p99:.1f})", "", ""),
                    (f"POST p99 at {args.post_rate:g}/s, during fan-out",
                     f"{loaded_p99:.1f} ms ({loaded_p99 - base_p99:+.1f} ms)",
                     f"<= +{allowed:.1f} ms",
                     verdict(loaded_p99 - base_p99 <= allowed and clean(baseline) and clean(again)
                             and clean(loaded) and during < expected)),
                ]  # fmt: skip
                if during >= expected:
                    print("   the fan-out ended before the POST window did", flush=True)
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
