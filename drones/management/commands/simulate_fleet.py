"""`manage.py simulate_fleet`: every drone of the fleet flown and reported through the telemetry
HTTP API, as a ground-control gateway would (drones/simulator.py)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from drones import flight
from drones.simulator import (
    FleetRow,
    HttpTransport,
    Simulator,
    fleet_rows,
    gateway_key_create,
    gateway_key_revoke,
)
from portal import metrics
from portal.telemetry import configure_telemetry

logger = logging.getLogger("drones.simulator")


class Command(BaseCommand):
    help = (
        "Fly every drone of the fleet through POST /api/v1/telemetry, obeying the commands in "
        "each answer, until SIGTERM or Ctrl-C."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        port = os.environ.get("WEB_PORT") or "8000"
        parser.add_argument(
            "--url",
            default=os.environ.get("FLEET_SIM_API_URL") or f"http://127.0.0.1:{port}",
            help="the API (default $FLEET_SIM_API_URL, else http://127.0.0.1:$WEB_PORT or 8000)",
        )
        parser.add_argument(
            "--key",
            default=os.environ.get("TELEMETRY_KEY") or "",
            help="a gateway telemetry key (default $TELEMETRY_KEY; without one, the simulator "
            "creates its own for the bases of the fleet)",
        )
        parser.add_argument(
            "--speedup",
            type=float,
            default=None,
            help="sim time per real second (default settings.FLEET_SIM_SPEEDUP, else 1)",
        )
        parser.add_argument(
            "--interval", type=float, default=1.0, help="real seconds per tick (default 1)"
        )
        parser.add_argument(
            "--batch", type=int, default=250, help="reports per request, 1-1000 (default 250)"
        )
        parser.add_argument(
            "--heartbeat-file",
            default=os.environ.get("SIMULATOR_HEARTBEAT_FILE") or "/tmp/simulator-heartbeat",  # nosec B108 # the container's own emptyDir
            help="touched after every tick the API answered (default "
            "$SIMULATOR_HEARTBEAT_FILE, else /tmp/simulator-heartbeat)",
        )
        parser.add_argument(
            "--refresh",
            type=float,
            default=10.0,
            help="seconds between readings of the fleet from the database (default 10)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        speedup = flight.speedup() if options["speedup"] is None else options["speedup"]
        if speedup <= 0 or options["interval"] <= 0:
            raise CommandError("--speedup and --interval must be more than 0")
        configure_telemetry(service_name="fabrikam-simulator")
        metrics.serve(settings.METRICS_PORT)
        key = options["key"]
        transport = HttpTransport(options["url"], key=key)
        own_keys = OwnKeys()
        simulator = Simulator(
            transport,
            speedup=speedup,
            batch=options["batch"],
            interval=options["interval"],
            heartbeat_file=Path(options["heartbeat_file"]),
            load_fleet=load_fleet,
            refresh_seconds=options["refresh"],
            make_key=None if key else own_keys.create,
        )
        stop = threading.Event()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            stop.set()
            # Out of a slow HTTP call at once, too: the loop unwinds through `finally`.
            raise Stopped

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        logger.info(
            "fleet simulator: reporting to %s at %gx, a tick every %g s",
            transport.url,
            speedup,
            options["interval"],
        )
        try:
            simulator.run(stop)
        except Stopped:
            pass
        finally:
            transport.close()
            own_keys.revoke()
        logger.info("fleet simulator: stopped")


class OwnKeys:
    """The gateway keys the simulator makes for itself: a new one replaces the last (drones of
    a new base joined), and the last is revoked when the simulator stops, so that restarts do
    not leave live keys behind."""

    def __init__(self) -> None:
        self.key = ""

    def create(self, base_ids: Iterable[str]) -> str:
        key = gateway_key_create(base_ids)
        self.revoke()
        self.key = key
        return key

    def revoke(self) -> None:
        if not self.key:
            return
        try:
            gateway_key_revoke(self.key)
        except Exception:
            logger.exception("fleet simulator: revoking its key failed")
        self.key = ""


def load_fleet() -> list[FleetRow]:
    # A process that lives for days: like at the start of a request, drop a connection the
    # database closed or that failed, so that the next read opens a new one.
    close_old_connections()
    return fleet_rows()


class Stopped(BaseException):
    """SIGTERM or SIGINT; a BaseException, like KeyboardInterrupt, so that no `except Exception`
    on the way swallows it."""
