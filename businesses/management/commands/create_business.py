from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from businesses.services import business_create


class Command(BaseCommand):
    help = "Create a business and print its new API key as the last line (shown only once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--email", default="")

    def handle(self, *args: Any, name: str, email: str, **options: Any) -> None:
        business, key = business_create(name=name, email=email)
        self.stdout.write(f"created business {business.name} ({business.id})")
        self.stdout.write("its API key (store it now, it is not shown again):")
        self.stdout.write(key)
