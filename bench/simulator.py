"""The fleet simulator's own cost: N drones flying missions at one report a second.

    .venv/bin/python bench/simulator.py [--drones 1000] [--seconds 20] [--speedup 1]

What is measured is the simulator's process alone: the engine (drones.simulator.SimDrone),
the JSON encoding of the reports, the HTTP requests and the reading of the answers with their
commands, through the same `Simulator.run` loop and `HttpTransport` as `manage.py
simulate_fleet`. The API is a minimal sink in a separate process (this script with --sink):
it answers every report "accepted" and every drone with a deliver command as the real server
words it (the route to the pickup starting at the drone's last position, so that the command
changes every second), with the pickup far enough to keep every drone flying for the whole
run. No database: the drones are built directly. CPU is the simulator process's user + system
time (getrusage), which leaves out the sink.

Target: 1,000 drones at 1 report/s on less than one core (the machine has 2).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import resource
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from drones.geo import EARTH_RADIUS_KM, Point  # noqa: E402
from drones.simulator import HttpTransport, SimDrone, Simulator  # noqa: E402

CENTER = Point(59.9139, 10.7522)  # Oslo, like bench/run.py's fleet
FLEET_RADIUS_KM = 10.0
SPEED_KMH = 60.0
TARGET_CPU = 1.0  # cores
TARGET_RATE = 0.95  # of one report a drone a second


def offset(point: Point, *, north_km: float, east_km: float) -> Point:
    return Point(
        point.lat + math.degrees(north_km / EARTH_RADIUS_KM),
        point.lon + math.degrees(east_km / EARTH_RADIUS_KM / math.cos(math.radians(point.lat))),
    )


def serial(index: int) -> str:
    return f"SIM-{index:05d}"


def mission(index: int, trip_km: float) -> tuple[Point, Point, Point]:
    """Drone `index`'s base, pickup and dropoff: the same in the bench and in the sink."""
    rng = random.Random(index)
    angle, r = rng.uniform(0, 2 * math.pi), FLEET_RADIUS_KM * math.sqrt(rng.random())
    base = offset(CENTER, north_km=r * math.cos(angle), east_km=r * math.sin(angle))
    heading = rng.uniform(0, 2 * math.pi)
    pickup = offset(base, north_km=trip_km * math.cos(heading), east_km=trip_km * math.sin(heading))
    dropoff = offset(pickup, north_km=2.0, east_km=2.0)
    return base, pickup, dropoff


# --- the sink (its own process) ---------------------------------------------------------------


def sink(port: int, trip_km: float) -> None:
    geometry: dict[str, tuple[list[float], dict[str, Any]]] = {}

    def orders(name: str, lat: float, lon: float) -> dict[str, Any]:
        if name not in geometry:
            base, pickup, dropoff = mission(int(name.split("-")[1]), trip_km)
            fixed: dict[str, Any] = {
                "type": "deliver",
                "delivery_id": f"bench-{name}",
                "stage": "en_route_to_pickup",
                "takeoff_at": None,
                "payload_kg": 2.0,
                "pickup": {"lat": pickup.lat, "lon": pickup.lon},
                "dropoff": {"lat": dropoff.lat, "lon": dropoff.lon},
                "base": {"lat": base.lat, "lon": base.lon},
            }
            geometry[name] = ([pickup.lat, pickup.lon], fixed)
        pickup_at, fixed = geometry[name]
        return {
            **fixed,
            "routes": {
                "to_pickup": [[lat, lon], pickup_at],
                "to_dropoff": [pickup_at, [fixed["dropoff"]["lat"], fixed["dropoff"]["lon"]]],
                "to_base": [
                    [fixed["dropoff"]["lat"], fixed["dropoff"]["lon"]],
                    [fixed["base"]["lat"], fixed["base"]["lon"]],
                ],
            },
        }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the simulator expects

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            reports = body["reports"]
            answer = {
                "accepted": len(reports),
                "ignored": 0,
                "refused": 0,
                "malformed": 0,
                "results": [
                    {"index": i, "drone": r["drone"], "result": "accepted"}
                    for i, r in enumerate(reports)
                ],
                "commands": {r["drone"]: orders(r["drone"], r["lat"], r["lon"]) for r in reports},
            }
            self.reply(json.dumps(answer).encode())

        def do_GET(self) -> None:
            self.reply(b"{}")

        def reply(self, data: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


# --- the bench --------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # this process only, every thread
    return usage.ru_utime + usage.ru_stime


def fleet(count: int, trip_km: float) -> dict[str, SimDrone]:
    """Half the drones at cruise altitude part of the way to their pickup, half on the ground
    at their base: all take their missions from the sink's first answer."""
    drones = {}
    for i in range(count):
        base, _, _ = mission(i, trip_km)
        airborne = i % 2 == 0
        drones[serial(i)] = SimDrone(
            serial(i),
            speed_kmh=SPEED_KMH,
            range_km=1000.0,  # the battery is not what this measures
            max_payload_kg=5.0,
            base=base,
            position=offset(base, north_km=0.3, east_km=0.3) if airborne else base,
            alt_m=60.0 if airborne else 0.0,
        )
    return drones


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--drones", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--speedup", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--sink", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--trip-km", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # Far enough that no drone reaches its pickup before the end.
    trip_km = args.trip_km or SPEED_KMH / 3600 * args.seconds * args.speedup * 2 + 5
    if args.sink:
        sink(args.sink, trip_km)
        return

    port = free_port()
    argv = [sys.executable, __file__, "--sink", str(port), "--trip-km", str(trip_km)]
    server = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()  # nosec B310 # http to loopback
                break
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the sink did not start")
            time.sleep(0.05)
        run(args, port, trip_km)
    finally:
        server.terminate()
        server.wait()


def run(args: argparse.Namespace, port: int, trip_km: float) -> None:
    transport = HttpTransport(f"http://127.0.0.1:{port}", key="bench.bench")
    simulator = Simulator(
        transport,
        speedup=args.speedup,
        batch=args.batch,
        interval=args.interval,
        load_fleet=None,
        summary_seconds=math.inf,
    )
    simulator.drones = fleet(args.drones, trip_km)
    stop = threading.Event()
    timer = threading.Timer(args.seconds, stop.set)
    print(
        f"fleet simulator bench: {args.drones} drones, {args.seconds:g} s at {args.speedup:g}x, "
        f"a tick every {args.interval:g} s, batches of {args.batch}, sink on port {port} "
        f"(pid {os.getpid()} measured)",
        flush=True,
    )
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    timer.start()
    simulator.run(stop)
    cpu, wall = cpu_seconds() - cpu0, time.monotonic() - wall0
    transport.close()

    counters = simulator.counters
    flying = sum(1 for d in simulator.drones.values() if d.airborne)
    rate = counters.reports / wall
    wanted = args.drones / args.interval
    cores = cpu / wall
    ticks = max(1, counters.ticks)
    print(f"   drones:              {args.drones} ({flying} flying at the end)")
    print(
        f"   reports/s achieved:  {rate:.0f} ({counters.ticks} ticks in {wall:.1f} s; target >= "
        f"{TARGET_RATE * wanted:.0f}: {'PASS' if rate >= TARGET_RATE * wanted else 'FAIL'}); "
        f"{counters.errors} HTTP errors"
    )
    print(
        f"   simulator CPU:       {cores:.3f} core ({cpu:.2f} CPU s in {wall:.1f} s wall; "
        f"target < {TARGET_CPU:.1f}: {'PASS' if cores < TARGET_CPU else 'FAIL'})"
    )
    print(
        f"   per tick:            {cpu / ticks * 1000:.1f} ms CPU, "
        f"{counters.http_seconds / ticks * 1000:.1f} ms in HTTP (with the sink's time); "
        f"{cpu / max(1, counters.reports) * 1e6:.1f} us CPU per report"
    )


if __name__ == "__main__":
    main()
