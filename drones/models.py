from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.db import models, transaction
from django.db.models import ExpressionWrapper, F, Q, Subquery
from rest_framework_api_key.models import AbstractAPIKey


class TimeStamped(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class DroneModel(TimeStamped):
    """A type of drone: what it carries, how fast and how far it flies."""

    name = models.CharField(max_length=100, unique=True)
    max_payload_kg = models.FloatField()
    cruise_speed_kmh = models.FloatField()
    range_km = models.FloatField(help_text="Distance it flies on a full battery.")

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(max_payload_kg__gt=0) & Q(cruise_speed_kmh__gt=0) & Q(range_km__gt=0),
                name="drone_model_positive_figures",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.name} ({self.max_payload_kg:g} kg, {self.cruise_speed_kmh:g} km/h, "
            f"{self.range_km:g} km)"
        )


class Base(TimeStamped):
    """Where drones live and charge."""

    name = models.CharField(max_length=100, unique=True)
    lat = models.FloatField()
    lon = models.FloatField()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(lat__gte=-90, lat__lte=90, lon__gte=-180, lon__lte=180),
                name="base_position_on_earth",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.lat:.5f}, {self.lon:.5f})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self._state.adding:  # no drone has it as home yet
            super().save(*args, **kwargs)
            return
        with transaction.atomic():
            super().save(*args, **kwargs)
            # Its drones' copy of where home is (Drone.home_lat).
            Drone.objects.filter(base=self).exclude(home_lat=self.lat, home_lon=self.lon).update(
                home_lat=self.lat, home_lon=self.lon
            )


class DroneQuerySet(models.QuerySet[Any]):
    def bulk_create(self, objs: Iterable[Any], *args: Any, **kwargs: Any) -> list[Any]:
        """Each drone with its home base's position (Drone.home_lat), read in one query."""
        drones = list(objs)
        missing = {d.base_id for d in drones if d.home_lat is None or d.home_lon is None}
        if missing:
            homes = {
                pk: (lat, lon)
                for pk, lat, lon in Base.objects.filter(pk__in=missing).values_list(
                    "pk", "lat", "lon"
                )
            }
            for drone in drones:
                if drone.home_lat is None or drone.home_lon is None:
                    drone.home_lat, drone.home_lon = homes[drone.base_id]
        return super().bulk_create(drones, *args, **kwargs)

    def update(self, **kwargs: Any) -> int:
        """An UPDATE that moves drones to another base moves their home with it, read from the
        base in the same statement (Drone.home_lat)."""
        base = kwargs.get("base", kwargs.get("base_id"))
        if base is not None and "home_lat" not in kwargs:
            there = Base.objects.filter(pk=base.pk if isinstance(base, Base) else base)
            kwargs["home_lat"] = Subquery(there.values("lat")[:1])
            kwargs["home_lon"] = Subquery(there.values("lon")[:1])
        return super().update(**kwargs)


class Drone(TimeStamped):
    class State(models.TextChoices):
        IDLE = "idle"
        FLYING = "flying"
        CHARGING = "charging"
        GROUNDED = "grounded"
        LOST = "lost"

    serial = models.CharField(max_length=32, unique=True)
    # No index of its own: the (model, base) index below serves model lookups.
    model = models.ForeignKey(
        DroneModel, on_delete=models.PROTECT, related_name="drones", db_index=False
    )
    base = models.ForeignKey(
        Base, on_delete=models.PROTECT, related_name="drones", help_text="Home base."
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.IDLE)
    battery_pct = models.FloatField(default=100.0)
    lat = models.FloatField(help_text="Current position.")
    lon = models.FloatField(help_text="Current position.")
    alt_m = models.FloatField(default=0.0)
    # The time of the last telemetry report applied; the position above is written with it at
    # most every few seconds (the latest is in Redis). None: the drone has never reported.
    last_report_at = models.DateTimeField(null=True, blank=True)
    # A plain UUID, not a ForeignKey: deliveries.Delivery points at Drone, and a key back would
    # make the two apps' migrations circular. Unique (see Meta): one delivery, one drone, in the
    # database itself; NULL (free) may repeat.
    assigned_delivery_id = models.UUIDField(null=True, blank=True, editable=False)
    # The home base's position, copied (by save(), the queryset's bulk_create() and update(),
    # and Base.save()) so that the database tells a drone at home from one away without a
    # join: `away`, which the drone choice's search of drones away from home reads through its
    # own partial index. Most
    # drones of a fleet wait at home, found by another index (step 1 of drones.selectors);
    # with them in the search's index, a box around a pickup that held a base read every drone
    # of that base (p99 44-65 ms at 100,000 drones on PostgreSQL, against 4-6 ms with this).
    home_lat = models.FloatField(editable=False)
    home_lon = models.FloatField(editable=False)
    away = models.GeneratedField(
        expression=ExpressionWrapper(
            ~Q(lat=F("home_lat"), lon=F("home_lon")), output_field=models.BooleanField()
        ),
        output_field=models.BooleanField(),
        db_persist=True,
    )

    objects = DroneQuerySet.as_manager()

    class Meta:
        ordering = ["serial"]
        indexes = [
            # The drone choice, step 2: free drones away from home in a latitude band, the
            # longitude, model, base and battery checked from the index itself. Partial on
            # literals (so SQLite's planner can prove it from the query): busy drones and
            # drones at home do not weigh on the search.
            models.Index(
                fields=["state", "lat", "lon", "model", "base", "battery_pct", "id"],
                condition=Q(assigned_delivery_id__isnull=True, away=True),
                name="drone_free_away_idx",
            ),
            # The drone choice, step 1: a free drone of a model waiting at its base (position
            # equal to the base's) with enough battery, the fullest first, in one probe.
            models.Index(
                fields=["state", "base", "model", "lat", "lon", "battery_pct"],
                condition=Q(assigned_delivery_id__isnull=True),
                name="drone_free_at_home_idx",
            ),
            # Which (model, base) pairs have drones: one probe per pair.
            models.Index(fields=["model", "base"], name="drone_model_base_idx"),
            # The watch for drones that stopped reporting.
            models.Index(fields=["state", "last_report_at"], name="drone_reporting_idx"),
        ]
        constraints = [
            # Partial, so that "IS NULL" cannot use it: without statistics SQLite's planner takes
            # a unique index for selective and would scan every free drone through it instead
            # of using the search index. Same guarantee as unique=True (NULLs never clash).
            models.UniqueConstraint(
                fields=["assigned_delivery_id"],
                condition=Q(assigned_delivery_id__isnull=False),
                name="drone_one_per_delivery",
            ),
            models.CheckConstraint(
                condition=Q(battery_pct__gte=0, battery_pct__lte=100),
                name="drone_battery_pct_0_100",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.serial} ({self.state}, {self.battery_pct:.0f} %)"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # The home follows the base; a save of other fields reads no base.
        fields = kwargs.get("update_fields")
        if self.base_id is not None and (fields is None or {"base", "base_id"} & set(fields)):
            self.home_lat, self.home_lon = self.base.lat, self.base.lon
            if fields is not None:
                kwargs["update_fields"] = {*fields, "home_lat", "home_lon"}
        super().save(*args, **kwargs)

    @property
    def is_free(self) -> bool:
        return self.state == self.State.IDLE and self.assigned_delivery_id is None


class TelemetryKey(AbstractAPIKey):
    """A credential to report telemetry: one drone's, or a ground-control gateway's for the
    drones whose home is one of its bases. Hashed at rest, shown once, revocable."""

    drone = models.ForeignKey(
        Drone, null=True, blank=True, on_delete=models.CASCADE, related_name="telemetry_keys"
    )
    bases = models.ManyToManyField(
        Base, blank=True, related_name="telemetry_keys", help_text="A gateway's bases."
    )

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "telemetry key"
        verbose_name_plural = "telemetry keys"
