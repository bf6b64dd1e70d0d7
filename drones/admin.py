"""Operators' view of the fleet. Changes to drones go through the services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from drones.models import Base, Drone, DroneModel
from drones.services import drone_state_set
from portal.errors import DomainError


@admin.register(DroneModel)
class DroneModelAdmin(admin.ModelAdmin):
    list_display = ["name", "max_payload_kg", "cruise_speed_kmh", "range_km"]
    search_fields = ["name"]


@admin.register(Base)
class BaseAdmin(admin.ModelAdmin):
    list_display = ["name", "lat", "lon"]
    search_fields = ["name"]


@admin.register(Drone)
class DroneAdmin(admin.ModelAdmin):
    list_display = [
        "serial",
        "state",
        "battery_pct",
        "base",
        "model",
        "assigned_delivery_id",
        "lat",
        "lon",
        "updated_at",
    ]
    list_filter = ["state", "model", "base", ("assigned_delivery_id", admin.EmptyFieldListFilter)]
    list_select_related = ["model", "base"]
    search_fields = ["serial", "=assigned_delivery_id"]
    ordering = ["serial"]
    show_full_result_count = False
    actions = ["ground", "return_to_service"]
    readonly_fields = ["assigned_delivery_id", "created_at", "updated_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Drone | None = None) -> list[str]:
        # State, battery and position change only through the services (actions, telemetry);
        # a booking only through drone_reserve / drone_release.
        fields = list(self.readonly_fields)
        if obj is not None:
            fields += ["state", "battery_pct", "lat", "lon", "alt_m"]
        return fields

    @admin.action(description="Ground the selected drones (out of service)")
    def ground(self, request: HttpRequest, queryset: QuerySet[Drone]) -> None:
        self._set_state(request, queryset, Drone.State.GROUNDED)

    @admin.action(description="Return the selected drones to service (idle)")
    def return_to_service(self, request: HttpRequest, queryset: QuerySet[Drone]) -> None:
        self._set_state(request, queryset, Drone.State.IDLE)

    def _set_state(self, request: HttpRequest, queryset: QuerySet[Drone], state: str) -> None:
        done = 0
        for drone_id in queryset.values_list("pk", flat=True):
            try:
                drone_state_set(drone_id=drone_id, state=state)
            except DomainError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                done += 1
        self.message_user(request, f"{done} drone(s) now {state}.", messages.SUCCESS)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deliveries keep a reference to their drone; retire a drone by grounding it.
        return False
