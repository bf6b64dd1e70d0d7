"""Demo data for `make run`: an operator, a business with a fresh API key, and a fleet."""

from __future__ import annotations

from io import StringIO
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from airspace.models import NoFlyZone
from airspace.services import zones_import
from businesses.models import Business
from businesses.services import api_key_create, business_create
from drones.models import Drone

DEMO_USERNAME = "admin"
DEMO_PASSWORD = "fabrikam-demo"  # noqa: S105 - a development-only account, refused without DEBUG
DEMO_BUSINESS = "Fabrikam Demo Business"
# The fleet flies around downtown Seattle.
DEMO_FLEET = {"count": 150, "lat": 47.6062, "lon": -122.3321, "radius_km": 8.0}
# Two no-fly zones over the stadiums south of downtown, so that some flights go around them.
DEMO_ZONES = {
    "Lumen Field": (47.5952, -122.3316, 0.25),
    "T-Mobile Park": (47.5914, -122.3325, 0.2),
}


def demo_zones() -> dict[str, Any]:
    """The demo zones as a GeoJSON FeatureCollection: squares around each stadium."""
    features = []
    for name, (lat, lon, half_km) in DEMO_ZONES.items():
        dlat, dlon = half_km / 111.2, half_km / (111.2 * 0.674)
        ring = [
            [lon - dlon, lat - dlat],
            [lon + dlon, lat - dlat],
            [lon + dlon, lat + dlat],
            [lon - dlon, lat + dlat],
            [lon - dlon, lat - dlat],
        ]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"name": name, "reason": "stadium", "active": True},
            }
        )
    return {"type": "FeatureCollection", "features": features}


class Command(BaseCommand):
    help = "Load demo data (idempotent). Refuses to run unless DEBUG is on."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("load_demo sets a well-known password; it runs only with DEBUG=true")
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            username=DEMO_USERNAME, defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save(update_fields=["password"])
        self.stdout.write(f"operator (Django admin): {DEMO_USERNAME} / {DEMO_PASSWORD}")

        # Keys are stored hashed and shown once, so each run makes a new one to print.
        business = Business.objects.filter(name=DEMO_BUSINESS).first()
        if business is None:
            business, key = business_create(name=DEMO_BUSINESS, email="demo@fabrikam.example")
        else:
            _, key = api_key_create(
                business=business, name=f"make run {timezone.now():%Y-%m-%d %H:%M}"
            )
        self.stdout.write(f"business API key ({DEMO_BUSINESS}): {key}")

        if not Drone.objects.exists():
            out = StringIO()
            call_command(
                "seed_fleet",
                count=DEMO_FLEET["count"],
                lat=DEMO_FLEET["lat"],
                lon=DEMO_FLEET["lon"],
                radius_km=DEMO_FLEET["radius_km"],
                seed=1,
                stdout=out,
            )
            self.stdout.write("demo fleet: " + out.getvalue().strip())
        else:
            count = Drone.objects.count()
            self.stdout.write(
                f"demo fleet: {count} drones around ({DEMO_FLEET['lat']}, {DEMO_FLEET['lon']})"
            )

        if not NoFlyZone.objects.exists():
            zones_import(demo_zones())
        names = ", ".join(NoFlyZone.objects.filter(active=True).values_list("name", flat=True))
        self.stdout.write(f"no-fly zones: {names or 'none'}")
