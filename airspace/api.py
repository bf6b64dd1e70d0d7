"""The staff API for no-fly zones, in GeoJSON: `/api/v1/zones` and `/api/v1/zones/<id>`.

Staff only (Django users with is_staff, by session or HTTP Basic): business API keys are
refused. Zones are checked by the services; a refused zone is a 422 naming what is wrong.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from airspace.models import NoFlyZone
from airspace.selectors import zone_get, zones_list
from airspace.services import (
    InvalidZoneInput,
    feature_fields,
    zone_delete,
    zone_feature,
    zone_update,
    zones_export,
    zones_import,
)
from audit.services import audited, zone_names

TAGS = ["airspace (staff)"]
STAFF_ONLY = (
    "Staff only: a Django staff user, by session (admin login) or HTTP Basic; business API keys "
    "are refused."
)


class GeometrySerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["Polygon", "MultiPolygon"])
    coordinates = serializers.JSONField(
        help_text="GeoJSON coordinates: rings of [lon, lat] positions, WGS84"
    )


class ZonePropertiesSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text="unique; an import updates by name")
    reason = serializers.ChoiceField(choices=NoFlyZone.Reason.choices)
    active = serializers.BooleanField(default=True)
    valid_from = serializers.DateTimeField(
        allow_null=True, required=False, help_text="in force from (null: no start)"
    )
    valid_until = serializers.DateTimeField(
        allow_null=True, required=False, help_text="in force until, excluded (null: no end)"
    )


class ZonePatchPropertiesSerializer(ZonePropertiesSerializer):
    name = serializers.CharField(max_length=100, required=False)
    reason = serializers.ChoiceField(choices=NoFlyZone.Reason.choices, required=False)
    active = serializers.BooleanField(required=False)


class FeatureInSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["Feature"])
    geometry = GeometrySerializer()
    properties = ZonePropertiesSerializer()


class FeatureCollectionInSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["FeatureCollection"])
    features = FeatureInSerializer(many=True)


class FeaturePatchSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["Feature"], required=False)
    geometry = GeometrySerializer(required=False)
    properties = ZonePatchPropertiesSerializer(required=False)


class FeatureOutSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["Feature"])
    id = serializers.UUIDField()
    geometry = GeometrySerializer()
    properties = ZonePropertiesSerializer()


class FeatureCollectionOutSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["FeatureCollection"])
    features = FeatureOutSerializer(many=True)


class ImportOutSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()


REFUSED = OpenApiResponse(description="a zone is refused: the error's message says what is wrong")
NOT_STAFF = OpenApiResponse(description="not signed in as a staff user")


class StaffApi(APIView):
    # Not the business API keys of the rest of the API: operators, as in admin.
    authentication_classes = [SessionAuthentication, BasicAuthentication]
    permission_classes = [IsAdminUser]


class ZonesApi(StaffApi):
    @extend_schema(
        operation_id="zones_list",
        tags=TAGS,
        summary="Every no-fly zone, as a GeoJSON FeatureCollection",
        description=STAFF_ONLY,
        parameters=[
            OpenApiParameter(
                "active", bool, description="only the active (true) or inactive (false) zones"
            )
        ],
        responses={200: FeatureCollectionOutSerializer, 403: NOT_STAFF},
    )
    def get(self, request: Request) -> Response:
        active = request.query_params.get("active")
        if active not in (None, "true", "false"):
            raise serializers.ValidationError({"active": ["true or false"]})
        zones = zones_list(active=None if active is None else active == "true")
        return Response(FeatureCollectionOutSerializer(zones_export(zones)).data)

    @extend_schema(
        operation_id="zones_import",
        tags=TAGS,
        summary="Import zones: a FeatureCollection, upserted by name, all or nothing",
        description=(
            f"{STAFF_ONLY} Each feature's properties: name, reason, active (default true), "
            "valid_from and valid_until (ISO 8601 with a zone, optional). A zone of the same name "
            "is updated; nothing is written unless every feature is valid, and the error names "
            "each feature at fault (its index and name) and what is wrong."
        ),
        request=FeatureCollectionInSerializer,
        responses={200: ImportOutSerializer, 403: NOT_STAFF, 422: REFUSED},
    )
    def post(self, request: Request) -> Response:
        with audited(request, "zone.import", (NoFlyZone, "", "import")) as audit:
            result = zones_import(request.data)
            audit.changes = {**vars(result), "zones": zone_names(request.data)}
        answer = ImportOutSerializer({"created": result.created, "updated": result.updated})
        return Response(answer.data, status=status.HTTP_200_OK)


class ZoneApi(StaffApi):
    @extend_schema(
        operation_id="zone_get",
        tags=TAGS,
        summary="One no-fly zone, as a GeoJSON Feature",
        description=STAFF_ONLY,
        responses={200: FeatureOutSerializer, 403: NOT_STAFF, 404: OpenApiResponse()},
    )
    def get(self, request: Request, zone_id: str) -> Response:
        zone = zone_get(zone_id=zone_id)
        return Response(FeatureOutSerializer(zone_feature(zone)).data)

    @extend_schema(
        operation_id="zone_update",
        tags=TAGS,
        summary="Change a zone: its geometry and any of its properties (a partial Feature)",
        description=(
            f"{STAFF_ONLY} Members left out are kept; null clears valid_from or valid_until."
        ),
        request=FeaturePatchSerializer,
        responses={
            200: FeatureOutSerializer,
            403: NOT_STAFF,
            404: OpenApiResponse(),
            409: OpenApiResponse(description="another zone has that name"),
            422: REFUSED,
        },
    )
    def patch(self, request: Request, zone_id: str) -> Response:
        zone = zone_get(zone_id=zone_id)
        patch = request.data
        if not isinstance(patch, dict) or patch.get("type", "Feature") != "Feature":
            raise InvalidZoneInput('send a GeoJSON Feature ({"type": "Feature", ...})')
        properties = patch.get("properties", {})
        if not isinstance(properties, dict):
            raise InvalidZoneInput("properties must be an object", field="properties")
        current = zone_feature(zone)
        merged: dict[str, Any] = {
            "type": "Feature",
            "geometry": patch.get("geometry", current["geometry"]),
            "properties": {**current["properties"], **properties},
        }
        fields = feature_fields(merged)
        changes = {k: v for k, v in properties.items() if k in ZonePropertiesSerializer().fields}
        changes |= {"geometry": "changed"} if "geometry" in patch else {}
        with audited(request, "zone.update", zone, changes):
            zone = zone_update(
                zone_id=zone.pk,
                name=fields.name,
                reason=fields.reason,
                geometry=fields.geometry,
                active=fields.active,
                valid_from=fields.valid_from,
                valid_until=fields.valid_until,
            )
        return Response(FeatureOutSerializer(zone_feature(zone)).data)

    @extend_schema(
        operation_id="zone_delete",
        tags=TAGS,
        summary="Delete a zone",
        description=f"{STAFF_ONLY} To lift a zone for a while, deactivate it instead.",
        responses={204: None, 403: NOT_STAFF, 404: OpenApiResponse()},
    )
    def delete(self, request: Request, zone_id: str) -> Response:
        with audited(request, "zone.delete", (NoFlyZone, zone_id)):
            zone_delete(zone_id=zone_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
