"""No-fly zones: where drones must not fly, why, and when."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import F, Q


class NoFlyZone(models.Model):
    """A polygon or multipolygon drones keep out of (with a margin), while it is active.

    `geometry` is GeoJSON in WGS84 ([lon, lat]), checked by airspace.geometry when written
    through the services. A zone with a window counts only from `valid_from` until
    `valid_until` (either may be open); `active` off takes it out of the airspace altogether.
    """

    class Reason(models.TextChoices):
        AIRPORT = "airport"
        STADIUM = "stadium"
        TEMPORARY_FLIGHT_RESTRICTION = "temporary_flight_restriction"
        WEATHER = "weather"
        OTHER = "other"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    reason = models.CharField(max_length=32, choices=Reason.choices)
    geometry = models.JSONField(help_text="GeoJSON Polygon or MultiPolygon, WGS84 [lon, lat].")
    active = models.BooleanField(default=True)
    valid_from = models.DateTimeField(null=True, blank=True, help_text="Empty: no start.")
    valid_until = models.DateTimeField(null=True, blank=True, help_text="Empty: no end.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "no-fly zone"
        verbose_name_plural = "no-fly zones"
        constraints = [
            models.CheckConstraint(
                condition=Q(valid_from__isnull=True)
                | Q(valid_until__isnull=True)
                | Q(valid_from__lt=F("valid_until")),
                name="no_fly_zone_window_ordered",
                violation_error_message="valid_until must be later than valid_from",
            ),
        ]

    def __str__(self) -> str:
        return self.name
