"""`manage.py import_zones FILE`: no-fly zones from a GeoJSON FeatureCollection, by name."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from airspace.services import zones_import
from portal.errors import DomainError


class Command(BaseCommand):
    help = (
        "Import no-fly zones from a GeoJSON FeatureCollection (FILE, or - for standard input). "
        "Each feature's properties: name, reason, active, and optionally valid_from and "
        "valid_until (ISO 8601). Zones of the same name are updated; nothing is imported unless "
        "every feature is valid."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="a .geojson file, or - for standard input")

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["file"]
        try:
            if path == "-":
                text = sys.stdin.read()
            else:
                with open(path, encoding="utf-8") as file:
                    text = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {path}: {exc}") from exc
        try:
            collection = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(
                f"{path} is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
            ) from exc
        try:
            result = zones_import(collection)
        except DomainError as exc:
            raise CommandError(f"{path}: {exc.message}") from exc
        self.stdout.write(f"{result.created} zone(s) created, {result.updated} updated")
