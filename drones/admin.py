"""Operators' view of the fleet. Changes to drones go through the services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework_api_key.admin import APIKeyModelAdmin

from drones.models import Base, Drone, DroneModel, TelemetryKey
from drones.telemetry import drone_ground, drone_return_to_service
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
        "last_report_at",
    ]
    list_filter = ["state", "model", "base", ("assigned_delivery_id", admin.EmptyFieldListFilter)]
    list_select_related = ["model", "base"]
    search_fields = ["serial", "=assigned_delivery_id"]
    ordering = ["serial"]
    show_full_result_count = False
    actions = ["ground", "return_to_service"]
    readonly_fields = ["assigned_delivery_id", "last_report_at", "created_at", "updated_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Drone | None = None) -> list[str]:
        # State, battery and position change only through the services (actions, telemetry);
        # a booking only through drone_reserve / drone_release.
        fields = list(self.readonly_fields)
        if obj is not None:
            fields += ["state", "battery_pct", "lat", "lon", "alt_m"]
        return fields

    @admin.action(description="Ground the selected drones (out of service; flying ones come home)")
    def ground(self, request: HttpRequest, queryset: QuerySet[Drone]) -> None:
        self._each(request, queryset, drone_ground, "grounded")

    @admin.action(description="Return the selected grounded drones to service")
    def return_to_service(self, request: HttpRequest, queryset: QuerySet[Drone]) -> None:
        self._each(request, queryset, drone_return_to_service, "back in service")

    def _each(self, request: HttpRequest, queryset: QuerySet[Drone], act: Any, done: str) -> None:
        count = 0
        for drone_id in queryset.values_list("pk", flat=True):
            try:
                act(drone_id=drone_id)
            except DomainError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                count += 1
        self.message_user(request, f"{count} drone(s) {done}.", messages.SUCCESS)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deliveries keep a reference to their drone; retire a drone by grounding it.
        return False


@admin.register(TelemetryKey)
class TelemetryKeyAdmin(APIKeyModelAdmin):
    """Keys for drones and gateways: the key is shown once, when it is created."""

    list_display = (*APIKeyModelAdmin.list_display, "drone")  # type: ignore[assignment]
    list_filter = ("revoked",)
    search_fields = ("name", "prefix", "drone__serial")  # type: ignore[assignment]
    filter_horizontal = ("bases",)
    autocomplete_fields = ("drone",)
