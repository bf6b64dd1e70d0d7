"""Operators' no-fly zones: drawn on a map, imported and exported as GeoJSON, switched on and off.

Every change goes through airspace.services (the same checks as the staff API and
`manage.py import_zones`), and a refused zone is shown on the form, never a server error.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from airspace.models import NoFlyZone
from airspace.services import (
    InvalidImport,
    InvalidZoneInput,
    zone_delete,
    zone_fields_check,
    zone_update,
    zone_upsert,
    zones_activate,
    zones_delete,
    zones_export,
    zones_import,
)
from audit.services import audited, form_changes, zone_names
from drones.models import Base
from portal.errors import DomainError

# The map's view when there is nothing to fit it to (no zone drawn, no base): central Seattle.
DEFAULT_CENTER = (47.6062, -122.3321)
DEFAULT_ZOOM = 11
# Other zones shown around the one edited, for bearings (their outlines go into the page).
CONTEXT_ZONES = 300
MAX_IMPORT_BYTES = 10 * 1024 * 1024


class ZoneMapWidget(forms.Textarea):
    """The zone drawn on a map (Leaflet.draw), kept as GeoJSON in a textarea under it.

    django-leaflet's LeafletWidget derives from GeoDjango's BaseGeometryWidget, which needs the
    GDAL library even for a plain JSONField; this widget uses the same Leaflet, Leaflet.draw and
    form script (`L.GeometryField`, which posts a MultiPolygon) without it.
    """

    template_name = "airspace/zone_map_widget.html"

    class Media:
        css = {
            "all": [
                "leaflet/leaflet.css",
                "leaflet/draw/leaflet.draw.css",
                "airspace/zone_map.css",
            ]
        }
        js = [
            "leaflet/leaflet.js",
            "leaflet/draw/leaflet.draw.js",
            "leaflet/leaflet.forms.js",
            "airspace/zone_map.js",
        ]

    def __init__(self, *, zone_id: UUID | None = None, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs={"rows": 6, **(attrs or {})})
        self.zone_id = zone_id

    def format_value(self, value: Any) -> str | None:
        # A new zone's JSONField gives "null": nothing drawn yet.
        return None if value in (None, "", "null") else super().format_value(value)

    def use_required_attribute(self, initial: Any) -> bool:
        # The textarea may sit folded away; the server says when no zone was drawn.
        return False

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        field_id = context["widget"]["attrs"].get("id") or f"id_{name}"
        context["widget"]["attrs"]["id"] = field_id
        features, bounds = self._surroundings()
        context["map_options_id"] = f"{field_id}-map-options"
        context["map"] = {
            "field": field_id,
            "center": DEFAULT_CENTER,
            "zoom": DEFAULT_ZOOM,
            "bounds": bounds,
            "tiles": getattr(settings, "AIRSPACE_MAP_TILES_URL", ""),
            "attribution": getattr(settings, "AIRSPACE_MAP_TILES_ATTRIBUTION", ""),
            "modifiable": not context["widget"]["attrs"].get("disabled", False),
            "context": {"type": "FeatureCollection", "features": features},
        }
        # A value that is not JSON (pasted, refused) stays in view so it can be corrected.
        context["show_geojson"] = bool(value) and not _is_json(value)
        return context

    def _surroundings(self) -> tuple[list[dict[str, Any]], list[list[float]] | None]:
        """The other zones and the bases as GeoJSON features, and the bases' bounds."""
        features: list[dict[str, Any]] = []
        zones = NoFlyZone.objects.filter(active=True)
        if self.zone_id is not None:
            zones = zones.exclude(pk=self.zone_id)
        for zone in zones.only("name", "reason", "geometry")[:CONTEXT_ZONES]:
            label = f"{zone.name} ({zone.get_reason_display().lower()})"
            features.append(
                {"type": "Feature", "geometry": zone.geometry, "properties": {"label": label}}
            )
        bases = list(Base.objects.values_list("name", "lat", "lon"))
        for base_name, lat, lon in bases:
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [lon, lat]},
                    "properties": {"label": f"base {base_name}"},
                }
            )
        bounds = None
        if bases:
            lats = [lat for _, lat, _ in bases]
            lons = [lon for _, _, lon in bases]
            bounds = [[min(lats), min(lons)], [max(lats), max(lons)]]
        return features, bounds


def _is_json(value: Any) -> bool:
    try:
        json.loads(value)
    except (TypeError, ValueError):
        return False
    return True


class NoFlyZoneForm(forms.ModelForm):
    class Meta:
        model = NoFlyZone
        fields = ["name", "reason", "active", "valid_from", "valid_until", "geometry"]
        widgets = {"geometry": ZoneMapWidget}
        labels = {"geometry": "Outline"}
        help_texts = {
            "geometry": (
                "Draw the zone with the polygon or rectangle tool (several shapes make one "
                "multipolygon); edit its corners with the edit tool."
            )
        }

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if self.errors:
            return data
        geometry = data.get("geometry")
        if isinstance(geometry, dict) and geometry.get("type") == "MultiPolygon":
            # The map posts a MultiPolygon even for one shape; that one is a Polygon.
            polygons = geometry.get("coordinates")
            if isinstance(polygons, list) and len(polygons) == 1:
                geometry = {"type": "Polygon", "coordinates": polygons[0]}
        try:
            checked = zone_fields_check(
                name=data.get("name"),
                reason=data.get("reason"),
                geometry=geometry,
                active=data.get("active", True),
                valid_from=data.get("valid_from"),
                valid_until=data.get("valid_until"),
            )
        except InvalidZoneInput as exc:
            field = exc.field if exc.field in self.fields else None
            raise ValidationError({field or "__all__": exc.message}) from exc
        data["geometry"] = checked.geometry
        return data


class WindowFilter(admin.SimpleListFilter):
    title = "window"
    parameter_name = "window"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("now", "in its window now"),
            ("upcoming", "window not yet begun"),
            ("over", "window over"),
            ("none", "no window"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[NoFlyZone]) -> QuerySet[NoFlyZone]:
        now = timezone.now()
        started = Q(valid_from__isnull=True) | Q(valid_from__lte=now)
        not_over = Q(valid_until__isnull=True) | Q(valid_until__gt=now)
        match self.value():
            case "now":
                return queryset.filter(started & not_over)
            case "upcoming":
                return queryset.filter(valid_from__gt=now)
            case "over":
                return queryset.filter(valid_until__lte=now)
            case "none":
                return queryset.filter(valid_from__isnull=True, valid_until__isnull=True)
        return queryset


class ImportForm(forms.Form):
    file = forms.FileField(
        required=False, help_text="A GeoJSON FeatureCollection (.geojson or .json)."
    )
    text = forms.CharField(
        required=False,
        label="or paste it",
        widget=forms.Textarea(attrs={"rows": 12, "cols": 80, "style": "font-family: monospace"}),
    )

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        upload = data.get("file")
        if upload is not None:
            if upload.size > MAX_IMPORT_BYTES:
                raise ValidationError({"file": f"at most {MAX_IMPORT_BYTES // 2**20} MB"})
            raw: bytes | str = upload.read()
            where = "file"
        elif data.get("text", "").strip():
            raw, where = data["text"], "text"
        else:
            raise ValidationError("Choose a file, or paste a FeatureCollection.")
        try:
            data["collection"] = json.loads(raw)
        except UnicodeDecodeError as exc:
            raise ValidationError({where: "the file is not UTF-8 text"}) from exc
        except json.JSONDecodeError as exc:
            raise ValidationError(
                {where: f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"}
            ) from exc
        return data


@admin.register(NoFlyZone)
class NoFlyZoneAdmin(admin.ModelAdmin):
    form = NoFlyZoneForm
    list_display = ["name", "reason", "active", "window", "in_force_now"]
    list_filter = ["reason", "active", WindowFilter]
    search_fields = ["name"]
    ordering = ["name"]
    actions = ["export_geojson", "activate", "deactivate"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "reason", "active"]}),
        (
            f"Window ({settings.TIME_ZONE}; empty: no limit)",
            {"fields": [("valid_from", "valid_until")]},
        ),
        ("Zone", {"fields": ["geometry"]}),
        ("History", {"fields": [("created_at", "updated_at")], "classes": ["collapse"]}),
    ]

    def get_fieldsets(self, request: HttpRequest, obj: NoFlyZone | None = None) -> Any:
        # A zone being added has no history yet.
        return self.fieldsets if obj is not None else self.fieldsets[:-1]

    @admin.display(description="window")
    def window(self, zone: NoFlyZone) -> str:
        """In the zone admin pages show times in (SITE_TIME_ZONE), named."""
        start, end = zone.valid_from, zone.valid_until
        if start and end:
            start, end = timezone.localtime(start), timezone.localtime(end)
            until = f"{end:%H:%M}" if end.date() == start.date() else f"{end:%Y-%m-%d %H:%M}"
            return f"{start:%Y-%m-%d %H:%M} to {until} {end:%Z}"
        if start:
            return f"from {timezone.localtime(start):%Y-%m-%d %H:%M %Z}"
        if end:
            return f"until {timezone.localtime(end):%Y-%m-%d %H:%M %Z}"
        return "always"

    @admin.display(description="in force now", boolean=True)
    def in_force_now(self, zone: NoFlyZone) -> bool:
        now = timezone.now()
        return (
            zone.active
            and (zone.valid_from is None or zone.valid_from <= now)
            and (zone.valid_until is None or now < zone.valid_until)
        )

    def get_form(
        self,
        request: HttpRequest,
        obj: NoFlyZone | None = None,
        change: bool = False,
        **kwargs: Any,
    ) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        # The map shows the other zones around this one, so it needs to know which it is.
        # (Without the change permission every field is read-only, and not in the form.)
        if "geometry" in form.base_fields:
            form.base_fields["geometry"].widget = ZoneMapWidget(zone_id=obj.pk if obj else None)
        return form

    def save_model(self, request: HttpRequest, obj: NoFlyZone, form: Any, change: bool) -> None:
        fields = {name: form.cleaned_data[name] for name in NoFlyZoneForm.Meta.fields}
        changes = form_changes(form, summarized=("geometry",))
        with audited(request, f"zone.{'update' if change else 'create'}", None, changes) as audit:
            if change:
                zone = zone_update(zone_id=obj.pk, **fields)
            else:
                zone, _ = zone_upsert(**fields)
            audit.target = zone
        # The admin goes on with `obj` (its history entry, the redirect): make it the zone saved.
        obj.pk, obj.created_at, obj.updated_at = zone.pk, zone.created_at, zone.updated_at
        obj.geometry = zone.geometry

    def delete_model(self, request: HttpRequest, obj: NoFlyZone) -> None:
        with audited(request, "zone.delete", obj):
            zone_delete(zone_id=obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[NoFlyZone]) -> None:
        with audited(request, "zone.delete", list(queryset)):
            zones_delete(zone_ids=queryset.values_list("pk", flat=True))

    @admin.action(description="Export the selected zones as GeoJSON")
    def export_geojson(self, request: HttpRequest, queryset: QuerySet[NoFlyZone]) -> HttpResponse:
        body = json.dumps(zones_export(queryset), indent=2)
        response = HttpResponse(body, content_type="application/geo+json")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="no-fly-zones-{stamp}.geojson"'
        return response

    @admin.action(description="Activate the selected zones", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[NoFlyZone]) -> None:
        with audited(request, "zone.activate", list(queryset.exclude(active=True))):
            changed = zones_activate(zone_ids=queryset.values_list("pk", flat=True), active=True)
        self.message_user(request, f"{changed} zone(s) activated.", messages.SUCCESS)

    @admin.action(description="Deactivate the selected zones", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[NoFlyZone]) -> None:
        with audited(request, "zone.deactivate", list(queryset.exclude(active=False))):
            changed = zones_activate(zone_ids=queryset.values_list("pk", flat=True), active=False)
        self.message_user(request, f"{changed} zone(s) deactivated.", messages.SUCCESS)

    # --- the import page ----------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        importer = path(
            "import/",
            self.admin_site.admin_view(self.import_view),
            name="airspace_noflyzone_import",
        )
        return [importer, *super().get_urls()]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not (self.has_add_permission(request) and self.has_change_permission(request)):
            return HttpResponse("Importing zones needs the add and change permissions.", status=403)
        posted = request.method == "POST"
        form = ImportForm(request.POST, request.FILES) if posted else ImportForm()
        if posted and form.is_valid():
            collection = form.cleaned_data["collection"]
            try:
                with audited(request, "zone.import", (NoFlyZone, "", "import")) as audit:
                    result = zones_import(collection)
                    audit.changes = {**vars(result), "zones": zone_names(collection)}
            except InvalidImport as exc:
                form.add_error(None, "Nothing was imported: fix these and import the file again.")
                for problem in exc.problems:
                    form.add_error(None, problem)
            except DomainError as exc:
                form.add_error(None, exc.message)
            else:
                self.message_user(
                    request,
                    f"Zones imported: {result.created} created, {result.updated} updated.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:airspace_noflyzone_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import no-fly zones from GeoJSON",
            "opts": self.opts,
            "form": form,
            "reasons": NoFlyZone.Reason.values,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/airspace/noflyzone/import.html", context)
