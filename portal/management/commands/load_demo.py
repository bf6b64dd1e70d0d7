"""Demo data for `make run`: an operator account (and, as the apps grow, a business and a fleet)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

DEMO_USERNAME = "admin"
DEMO_PASSWORD = "fabrikam-demo"  # noqa: S105 - a development-only account, refused without DEBUG


class Command(BaseCommand):
    help = "Load demo data (idempotent). Refuses to run unless DEBUG is on."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError(
                "load_demo creates a well-known password; it runs only with DEBUG=true"
            )
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            username=DEMO_USERNAME, defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save(update_fields=["password"])
        self.stdout.write(f"operator: {DEMO_USERNAME} / {DEMO_PASSWORD}")
