"""`manage.py create_telemetry_key NAME (--drone SERIAL | --base NAME ...)`: a telemetry key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from drones.models import Base, Drone
from drones.services import telemetry_key_create
from portal.errors import DomainError


class Command(BaseCommand):
    help = (
        "Create a telemetry key for one drone (--drone) or for a gateway reporting for the drones "
        "of some bases (--base, repeated, or --all-bases). Prints the key last; it is shown once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="what the key is for, e.g. 'gateway north'")
        parser.add_argument("--drone", help="the drone's serial")
        parser.add_argument("--base", action="append", default=[], help="a base's name")
        parser.add_argument("--all-bases", action="store_true", help="every base there is now")

    def handle(self, *args: Any, **options: Any) -> None:
        drone_id = None
        if options["drone"]:
            drone = Drone.objects.filter(serial=options["drone"]).first()
            if drone is None:
                raise CommandError(f"no drone {options['drone']!r}")
            drone_id = drone.pk
        names = options["base"]
        bases = list(
            Base.objects.all() if options["all_bases"] else Base.objects.filter(name__in=names)
        )
        missing = set(names) - {b.name for b in bases}
        if missing:
            raise CommandError(f"no base named {', '.join(sorted(missing))}")
        try:
            record, key = telemetry_key_create(
                name=options["name"], drone_id=drone_id, base_ids=[b.pk for b in bases] or None
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        scope = f"drone {options['drone']}" if drone_id else f"{len(bases)} base(s)"
        self.stdout.write(f"telemetry key {record.prefix} for {scope}:")
        self.stdout.write(key)
