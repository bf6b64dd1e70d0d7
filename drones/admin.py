"""Operators' view of the fleet. Changes to drones go through the services.

A drone booked for a delivery reads as booked, never plain "idle"; its page shows where it is on
a small map (Leaflet from django-leaflet's static files, started by a static script: the admin
runs under a Content Security Policy without inline scripts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, json_script
from django.utils.safestring import SafeString
from django.utils.translation import ngettext
from rest_framework_api_key.admin import APIKeyModelAdmin

from audit.services import audited, form_changes
from deliveries.models import Delivery
from drones.models import Base, Drone, DroneModel, TelemetryKey
from drones.services import drone_send_home
from drones.telemetry import drone_ground, drone_return_to_service
from portal.errors import DomainError

State = Drone.State


@admin.register(DroneModel)
class DroneModelAdmin(admin.ModelAdmin):
    list_display = ["name", "max_payload_kg", "cruise_speed_kmh", "range_km"]
    search_fields = ["name"]


@admin.register(Base)
class BaseAdmin(admin.ModelAdmin):
    list_display = ["name", "lat", "lon"]
    search_fields = ["name"]


class DroneForm(forms.ModelForm):
    """The drone's page; its media draw the map."""

    class Media:
        css = {"all": ["leaflet/leaflet.css", "drones/drone_map.css"]}
        js = ["leaflet/leaflet.js", "drones/drone_map.js"]


def _stage(status: str | None) -> str:
    return (status or "gone").replace("_", " ")


@admin.register(Drone)
class DroneAdmin(admin.ModelAdmin):
    form = DroneForm
    list_display = [
        "serial",
        "status",
        "battery_pct",
        "last_seen",
        "current_delivery",
        "base",
        "model",
    ]
    list_filter = ["state", "model", "base", ("assigned_delivery_id", admin.EmptyFieldListFilter)]
    list_select_related = ["model", "base"]
    search_fields = ["serial", "=assigned_delivery_id"]
    ordering = ["serial"]
    show_full_result_count = False
    actions = ["ground", "return_to_service", "send_home"]
    readonly_fields = [
        "status",
        "current_delivery",
        "assigned_delivery_id",
        "last_report_at",
        "position",
        "created_at",
        "updated_at",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Drone]:
        stage = Delivery.objects.filter(pk=OuterRef("assigned_delivery_id")).values("status")[:1]
        return super().get_queryset(request).annotate(delivery_status=Subquery(stage))

    def get_fieldsets(self, request: HttpRequest, obj: Drone | None = None) -> Any:
        if obj is None:
            return [
                (None, {"fields": ["serial", "model", "base"]}),
                ("Now", {"fields": ["state", "battery_pct", ("lat", "lon", "alt_m")]}),
            ]
        return [
            (None, {"fields": ["serial", "model", "base"]}),
            ("Now", {"fields": ["status", "battery_pct", "last_report_at", "current_delivery"]}),
            ("Where", {"fields": ["position"]}),
            ("History", {"fields": [("created_at", "updated_at")], "classes": ["collapse"]}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Drone | None = None) -> list[str]:
        # State, battery and position change only through the services (actions, telemetry);
        # a booking only through drone_reserve / drone_release.
        fields = list(self.readonly_fields)
        if obj is not None:
            fields += ["state", "battery_pct", "lat", "lon", "alt_m"]
        return fields

    # --- what operators read ------------------------------------------------------------------

    @admin.display(description="state", ordering="state")
    def status(self, drone: Drone) -> str | SafeString:
        if drone.assigned_delivery_id is None:
            return drone.get_state_display()
        link = self._delivery_link(drone)
        if drone.state == State.IDLE:
            return format_html("Booked for {}", link)
        return format_html("{} for {}", drone.get_state_display(), link)

    @admin.display(description="current delivery")
    def current_delivery(self, drone: Drone) -> str | SafeString:
        if drone.assigned_delivery_id is None:
            return "-"
        stage = _stage(getattr(drone, "delivery_status", None))
        return format_html("{} ({})", self._delivery_link(drone), stage)

    @admin.display(description="last seen", ordering="last_report_at")
    def last_seen(self, drone: Drone) -> Any:
        return drone.last_report_at or "never"

    @admin.display(description="position")
    def position(self, drone: Drone) -> SafeString:
        """The drone, its base and its delivery's pickup and dropoff on a small map (drawn by
        drones/drone_map.js from the JSON beside it), and the position in figures."""
        delivery = (
            Delivery.objects.filter(pk=drone.assigned_delivery_id).first()
            if drone.assigned_delivery_id
            else None
        )
        data: dict[str, Any] = {
            "drone": {
                "lat": drone.lat,
                "lon": drone.lon,
                "label": f"{drone.serial} ({drone.state})",
            },
            "base": {
                "lat": drone.base.lat,
                "lon": drone.base.lon,
                "label": f"base {drone.base.name}",
            },
            "tiles": settings.MAP_TILE_URL,
            "attribution": settings.MAP_TILE_ATTRIBUTION,
        }
        if delivery is not None:
            data["pickup"] = {
                "lat": delivery.pickup_lat,
                "lon": delivery.pickup_lon,
                "label": f"pickup {delivery.pickup_address}".strip(),
            }
            data["dropoff"] = {
                "lat": delivery.dropoff_lat,
                "lon": delivery.dropoff_lon,
                "label": f"dropoff {delivery.dropoff_address}".strip(),
            }
        seen = (
            f"as last reported at {drone.last_report_at:%Y-%m-%d %H:%M:%S}"
            if drone.last_report_at
            else "never reported: where it was placed"
        )
        return format_html(
            '<div class="drone-map" id="drone-map" data-options="drone-map-options" '
            'role="img" aria-label="Map of drone {serial}"></div>{options}'
            '<p class="drone-map-figures">{where} ({seen})</p>',
            serial=drone.serial,
            options=json_script(data, "drone-map-options"),
            where=f"{drone.lat:.5f}, {drone.lon:.5f}, {drone.alt_m:.0f} m up",
            seen=seen,
        )

    def _delivery_link(self, drone: Drone) -> SafeString:
        delivery_id = str(drone.assigned_delivery_id)
        url = reverse("admin:deliveries_delivery_change", args=[quote(delivery_id)])
        return format_html(
            '<a href="{}" title="{}">delivery {}</a>', url, delivery_id, delivery_id[:8]
        )

    # --- actions ------------------------------------------------------------------------------

    @admin.action(description="Ground the selected drones (out of service; flying ones come home)")
    def ground(self, request: HttpRequest, queryset: QuerySet[Drone]) -> None:
        done = self._each(
            request,
            queryset,
            drone_ground,
            verb="grounded",
            refused="not grounded",
            action="ground",
        )
        if done:
            self.message_user(
                request,
                ngettext(
                    "%(count)d drone grounded: never assigned until it is released; a delivery "
                    "it held before pickup looks for another drone.",
                    "%(count)d drones grounded: never assigned until they are released; "
                    "deliveries they held before pickup look for other drones.",
                    done,
                )
                % {"count": done},
                messages.SUCCESS,
            )

    @admin.action(description="Release the selected grounded drones (back into service)")
    def return_to_service(self, request: HttpRequest, queryset: QuerySet[Drone]) -> None:
        done = self._each(
            request,
            queryset,
            drone_return_to_service,
            verb="released back into service",
            refused="not released",
            action="release",
        )
        if done:
            self.message_user(
                request,
                ngettext(
                    "%(count)d drone released back into service.",
                    "%(count)d drones released back into service.",
                    done,
                )
                % {"count": done},
                messages.SUCCESS,
            )

    @admin.action(description="Send the selected drones home (their deliveries get others)")
    def send_home(self, request: HttpRequest, queryset: QuerySet[Drone]) -> None:
        operator = request.user.get_username()

        def send(*, drone_id: Any) -> Drone:
            return drone_send_home(drone_id=drone_id, operator=operator)

        done = self._each(
            request, queryset, send, verb="sent home", refused="not sent home", action="send_home"
        )
        if done:
            self.message_user(
                request,
                ngettext(
                    "%(count)d drone sent home; its delivery looks for another drone.",
                    "%(count)d drones sent home; their deliveries look for other drones.",
                    done,
                )
                % {"count": done},
                messages.SUCCESS,
            )

    def _each(
        self,
        request: HttpRequest,
        queryset: QuerySet[Drone],
        act: Callable[..., Drone],
        *,
        verb: str,
        refused: str,
        action: str,
    ) -> int:
        """Act on each drone; a refused one is reported with the service's reason, a done one
        is written to the drone's history and the audit trail under the operator's name."""
        done = 0
        for drone in queryset:
            try:
                target = (Drone, drone.pk, drone.serial)
                with audited(request, f"drone.{action}", target, {"from": drone.state}):
                    if act is drone_ground:  # the delivery's event names who grounded it
                        act(drone_id=drone.pk, operator=request.user.get_username())
                    else:
                        act(drone_id=drone.pk)
            except DomainError as exc:
                self.message_user(
                    request, f"Drone {drone.serial} {refused}: {exc.message}.", messages.WARNING
                )
            else:
                self.log_change(request, drone, f"{verb.capitalize()}.")
                done += 1
        return done

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

    def save_model(
        self, request: HttpRequest, obj: Any, form: Any = None, change: bool = False
    ) -> None:
        revoked = change and "revoked" in form.changed_data and obj.revoked
        action = "revoke" if revoked else "update" if change else "create"
        with audited(request, f"telemetry_key.{action}", changes=form_changes(form)) as audit:
            super().save_model(request, obj, form, change)
            audit.target = (TelemetryKey, obj.prefix, obj.name)
