"""`make bench` phase 10: what tracing costs ingestion.

Three gunicorn web processes (the Procfile's command, production settings) serve
`POST /api/v1/deliveries` side by side: one with telemetry off (no exporter configured: nothing
instrumented) and two exporting over OTLP/HTTP to a collector that accepts and drops
everything, in a process of its own as a node's collector would: one sampling as the chart
does (OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=0.1: a tenth of
the requests start a trace, and what they cause follows their decision), one keeping every
trace (the SDK's default). Closed-loop rounds take each in turn, in a rotating order, so a
machine that speeds up or slows down moves all three; a cost is one minus the median of the
rounds' rate ratios. Target: at most 15 % as the chart samples; every trace is shown beside it.

Beside the rates, each server's CPU per request (its gunicorn processes' CPU time during its
turn, from /proc, over the requests it answered) and the cost read from it: the median of the
rounds' CPU ratios, minus one. On a busy machine the rates swing with whatever else runs; the
CPU a request takes moves much less, so that figure is the one to read there.

    .venv/bin/python bench/telemetry_cost.py [--rounds 5] [--seconds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
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
    api_clients,
    bench_environ,
    cleanup,
    delivery_bodies,
    django_for_bench,
    keyed_requests,
    machine_load,
    on_sigterm,
    process,
    procfile_command,
    wait_http,
)
from devtools.localservices import free_port  # noqa: E402

SQLITE_FILE = WORK_DIR / "telemetry-cost.sqlite3"  # not run.py's: benches may run side by side
TARGET_COST = 0.15


def collector(port: int) -> None:
    """A no-op OTLP/HTTP collector: reads each export and answers 200 with an empty body."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real collector

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--collector", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.collector:
        collector(args.collector)
        return 0
    signal.signal(signal.SIGTERM, on_sigterm)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    env = bench_environ(dict(os.environ), sqlite_file=SQLITE_FILE)
    with django_for_bench(env) as (_, vendor):
        from django.db import connection

        from drones.geo import Point
        from drones.services import fleet_seed
        from portal.celery import app

        made = Made([], [], [])
        try:
            # Many businesses call, each under the per-business limits.
            callers = api_clients(300, "Bench telemetry cost")
            made.business_ids += [business.pk for business, _ in callers]
            fleet = fleet_seed(count=200, center=Point(*CENTER), radius_km=FLEET_RADIUS_KM, seed=1)
            made.drone_ids += fleet.drone_ids
            made.base_ids += [b.id for b in fleet.bases]
            print(f"database: {vendor}; {machine_load()}", flush=True)
            rates, cpu_ms = measure(args, env, [key for _, key in callers])
        finally:
            app.control.purge()  # the workflow messages the requests queued
            if connection.vendor != "sqlite":
                cleanup(made)
            connection.close()
    costs, cpu_costs = {}, {}
    for name in ("sampled", "all"):
        ratios = [r[name] / r["off"] for r in rates if r["off"]]
        costs[name] = 1 - statistics.median(ratios)
        print(
            f"   {name} / off, round by round: "
            + ", ".join(f"{x:.3f}" for x in ratios)
            + f"; median {statistics.median(ratios):.3f}",
            flush=True,
        )
        cpu_ratios = [c[name] / c["off"] for c in cpu_ms if c["off"] and c[name]]
        cpu_costs[name] = statistics.median(cpu_ratios) - 1 if cpu_ratios else float("nan")
        print(
            f"   {name} / off, CPU per request, round by round: "
            + ", ".join(f"{x:.3f}" for x in cpu_ratios)
            + f"; median {1 + cpu_costs[name]:.3f}",
            flush=True,
        )
    print(f"   {machine_load()}", flush=True)
    print("| figure | measured | target | result |")
    print("| --- | --- | --- | --- |")
    verdict = "PASS" if costs["sampled"] <= TARGET_COST else "FAIL"
    print(
        f"| ingestion: cost of tracing (OTLP, 10 % sampled as the chart) "
        f"| {100 * costs['sampled']:.1f} % | <= {100 * TARGET_COST:.0f} % | {verdict} |"
    )
    print(
        f"| ingestion: cost of tracing every request | {100 * costs['all']:.1f} % | | (compared) |"
    )
    off_ms = statistics.median(c["off"] for c in cpu_ms)
    for name, label in (("sampled", "10 % sampled"), ("all", "every trace")):
        ms = statistics.median(c[name] for c in cpu_ms)
        print(
            f"| ingestion: web CPU per request, {label} / off | {ms:.2f} / {off_ms:.2f} ms: "
            f"{100 * cpu_costs[name]:+.1f} % | | (CPU) |"
        )
    return 0


SERVERS = {
    "off": {},
    "sampled": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    },
    "all": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
}


def measure(
    args: argparse.Namespace, env: dict[str, str], keys: list[str]
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Each round's rate (requests a second) and web CPU per request (ms) of each server."""
    bodies = [json.dumps(b).encode() for b in delivery_bodies(500, seed=args.seed)]
    sink_port = free_port()
    ports = {name: free_port() for name in SERVERS}
    targets = {
        name: load.Target(
            name,
            port,
            keyed_requests("/api/v1/deliveries", bodies, keys),
        )
        for name, port in ports.items()
    }
    web = {**env, "DJANGO_SETTINGS_MODULE": "portal.settings"}
    exporting = {**web, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}"}
    sink = [sys.executable, str(Path(__file__).resolve()), "--collector", str(sink_port)]
    pids: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(process(sink, env=env, log=WORK_DIR / "collector.log"))
        for name, extra in SERVERS.items():
            log = WORK_DIR / f"gunicorn-{name}.log"
            child = stack.enter_context(
                process(
                    procfile_command("web", WEB_PORT=str(ports[name])),
                    env={**(exporting if extra else web), **extra},
                    log=log,
                )
            )
            pids[name] = child.pid
            wait_http(
                f"http://127.0.0.1:{ports[name]}/healthz/live", timeout=60, child=child, log=log
            )
        for target in targets.values():  # warm every server's code paths and connections
            load.closed_loop(target, concurrency=args.concurrency, seconds=1.0, warmup=0.5)
        rates: list[dict[str, float]] = []
        cpu_ms: list[dict[str, float]] = []
        names = list(SERVERS)
        for round_ in range(args.rounds):
            measured: dict[str, float] = {}
            spent: dict[str, float] = {}
            for name in names[round_ % 3 :] + names[: round_ % 3]:
                before = cpu.snapshot()
                result = load.closed_loop(
                    targets[name], concurrency=args.concurrency, seconds=args.seconds, warmup=0.0
                )
                spent_by = cpu.usage(before, cpu.snapshot(), _server_group(pids[name]))
                web_cpu = spent_by.get("web", 0.0)
                measured[name] = result.rate
                spent[name] = 1000 * web_cpu / result.completed if result.completed else 0.0
                print(
                    f"   telemetry {name:<7} {result.rate:7.1f} req/s  "
                    f"p50 {result.percentile_ms(50):6.1f} ms  "
                    f"p99 {result.percentile_ms(99):6.1f} ms  "
                    f"web CPU {spent[name]:5.2f} ms/req  {dict(result.statuses)}",
                    flush=True,
                )
            rates.append(measured)
            cpu_ms.append(spent)
    return rates, cpu_ms


def _server_group(root: int) -> Any:
    def group(snap: cpu.Snapshot, pid: int) -> str:
        return "web" if cpu.descends_from(snap, pid, root) else "other"

    return group


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except subprocess.SubprocessError as exc:
        print(f"failed: {exc}", file=sys.stderr)
        sys.exit(1)
