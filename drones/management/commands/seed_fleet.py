"""`manage.py seed_fleet --count N --lat LAT --lon LON`: a demo or benchmark fleet."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from drones.geo import Point
from drones.services import fleet_seed


class Command(BaseCommand):
    help = "Add N idle, charged drones on a few new bases around a point (models if missing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, required=True, help="drones to add")
        parser.add_argument("--lat", type=float, required=True, help="centre latitude")
        parser.add_argument("--lon", type=float, required=True, help="centre longitude")
        parser.add_argument(
            "--radius-km", type=float, default=10.0, help="bases lie within (default 10)"
        )
        parser.add_argument("--seed", type=int, default=None, help="random seed")

    def handle(self, *args: Any, **options: Any) -> None:
        fleet = fleet_seed(
            count=options["count"],
            center=Point(options["lat"], options["lon"]),
            radius_km=options["radius_km"],
            seed=options["seed"],
        )
        self.stdout.write(f"{len(fleet.drone_ids)} drones on {len(fleet.bases)} bases:")
        for base in fleet.bases:
            self.stdout.write(
                f"  {base.name} at {base.lat:.5f}, {base.lon:.5f}: {base.drones} drones"
            )
