"""Demo data for `make run`: an operator, a customer, a business with a member and a fresh API
key, a fleet and two no-fly zones. Prints where to go and whom to sign in as, with the links on
PUBLIC_BASE_URL (`make run` sets it to the port it serves on)."""

from __future__ import annotations

from io import StringIO
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse
from django.utils import timezone

from airspace.models import NoFlyZone
from airspace.services import zones_import
from businesses.models import Business, BusinessMember
from businesses.services import api_key_create, business_create
from drones.models import Base, Drone

DEMO_USERNAME = "admin"
DEMO_PASSWORD = "fabrikam-demo"  # noqa: S105 - development-only accounts, refused without DEBUG
DEMO_BUSINESS = "Fabrikam Demo Business"
# Site users sign in with their email address, which is also their username.
DEMO_CUSTOMER = "customer@fabrikam.example"
DEMO_MEMBER = "business@fabrikam.example"
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
        demo_user(DEMO_USERNAME, is_staff=True, is_superuser=True)
        demo_user(DEMO_CUSTOMER, email=DEMO_CUSTOMER)

        # Keys are stored hashed and shown once, so each run makes a new one to print.
        business = Business.objects.filter(name=DEMO_BUSINESS).first()
        if business is None:
            business, key = business_create(name=DEMO_BUSINESS, email="demo@fabrikam.example")
        else:
            _, key = api_key_create(
                business=business, name=f"make run {timezone.now():%Y-%m-%d %H:%M}"
            )
        member = demo_user(DEMO_MEMBER, email=DEMO_MEMBER)
        BusinessMember.objects.get_or_create(user=member, defaults={"business": business})

        if not Drone.objects.exists():
            call_command(
                "seed_fleet",
                count=DEMO_FLEET["count"],
                lat=DEMO_FLEET["lat"],
                lon=DEMO_FLEET["lon"],
                radius_km=DEMO_FLEET["radius_km"],
                seed=1,
                stdout=StringIO(),
            )
        fleet = (
            f"{Drone.objects.count()} drones at {Base.objects.count()} bases around "
            f"({DEMO_FLEET['lat']}, {DEMO_FLEET['lon']})"
        )

        if not NoFlyZone.objects.exists():
            zones_import(demo_zones())
        names = ", ".join(NoFlyZone.objects.filter(active=True).values_list("name", flat=True))

        login = link("login")
        pages = [
            ("Home", link("home"), ""),
            ("Admin", link("admin:index"), f"{DEMO_USERNAME} / {DEMO_PASSWORD} (operator)"),
            ("API docs", link("docs"), ""),
            ("Customer login", login, f"{DEMO_CUSTOMER} / {DEMO_PASSWORD}"),
            ("Business login", login, f"{DEMO_MEMBER} / {DEMO_PASSWORD} ({DEMO_BUSINESS})"),
        ]
        facts = [
            ("API key", f"{key}  ({DEMO_BUSINESS}; a new key each run)"),
            ("Demo fleet", fleet),
            ("No-fly zones", names or "none"),
        ]
        width = max(len(url) for _, url, _ in pages)
        for label, url, who in pages:
            self.stdout.write(f"{label + ':':<16}{url:<{width}}  {who}".rstrip())
        for label, value in facts:
            self.stdout.write(f"{label + ':':<16}{value}")


def demo_user(username: str, **fields: Any) -> Any:
    """The demo account `username` with the demo password, made on the first run only (a password
    changed since is kept)."""
    user, created = get_user_model().objects.get_or_create(username=username, defaults=fields)
    if created:
        user.set_password(DEMO_PASSWORD)
        user.save(update_fields=["password"])
    return user


def link(url_name: str) -> str:
    """The absolute URL of a page, on the address the site is served at."""
    return settings.PUBLIC_BASE_URL + reverse(url_name)
