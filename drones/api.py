"""Telemetry in over HTTPS: `POST /api/v1/telemetry`, batches of reports from drones or their
ground-control gateways, answered with each drone's orders."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from django.core.validators import RegexValidator
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from drones.auth import ReporterPrincipal, TelemetryKeyAuthentication
from drones.telemetry import Report, telemetry_apply
from portal.api import ErrorDetailOut, represented

MAX_REPORTS = 1000
# name: (low, high) for the numbers of a report.
RANGES: dict[str, tuple[float, float]] = {
    "lat": (-90.0, 90.0),
    "lon": (-180.0, 180.0),
    "alt_m": (-500.0, 10_000.0),
    "ground_speed_mps": (0.0, 1_000.0),
    "heading": (0.0, 360.0),
    "battery_pct": (0.0, 100.0),
}
# A drone's serial has a character that is not whitespace (as Python's str.strip() knows it:
# U+00A0 and U+001C-U+001F are), and no NUL: the one rule the schema documents and
# parse_report applies, so that they cannot disagree.
SERIAL = re.compile(
    r"^[^\x00]*"
    r"[^\x00\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    r"[^\x00]*$"
)


class ReportIn(serializers.Serializer):
    drone = serializers.CharField(
        max_length=32, validators=[RegexValidator(SERIAL)], help_text="the drone's serial"
    )
    time = serializers.DateTimeField(help_text="when it was measured, ISO 8601 with a zone")
    lat = serializers.FloatField(min_value=-90, max_value=90)
    lon = serializers.FloatField(min_value=-180, max_value=180)
    alt_m = serializers.FloatField(min_value=-500, max_value=10_000)
    ground_speed_mps = serializers.FloatField(min_value=0, max_value=1_000)
    heading = serializers.FloatField(min_value=0, max_value=360)
    battery_pct = serializers.FloatField(min_value=0, max_value=100)
    refuses_unknown_fields = True  # parse_report does; the schema says so (portal/schema.py)


class TelemetryIn(serializers.Serializer):
    refuses_unknown_fields = True  # the schema says so (portal/schema.py)
    reports = serializers.ListField(child=ReportIn(), min_length=1, max_length=MAX_REPORTS)


class ItemOut(serializers.Serializer):
    index = serializers.IntegerField()
    drone = serializers.CharField(allow_null=True)
    result = serializers.ChoiceField(choices=["accepted", "ignored", "refused", "malformed"])
    reason = serializers.CharField(required=False)

    def get_fields(self) -> dict[str, serializers.Field]:
        # `fields` names a Serializer attribute, so it cannot be declared like the others.
        return {
            **super().get_fields(),
            "fields": serializers.DictField(
                child=serializers.ListField(), required=False, help_text="a malformed item's errors"
            ),
        }


class TelemetryOut(serializers.Serializer):
    accepted = serializers.IntegerField()
    ignored = serializers.IntegerField()
    refused = serializers.IntegerField()
    malformed = serializers.IntegerField()
    results = ItemOut(many=True)
    commands = serializers.DictField(
        child=serializers.DictField(),
        help_text=(
            "each reporting drone's orders: {type: stand_by}, {type: return_to_base, base, "
            "route}, or {type: deliver, delivery_id, stage, takeoff_at, payload_kg, pickup, "
            "dropoff, base, routes: {to_pickup, to_dropoff, to_base}}"
        ),
    )
    error = ErrorDetailOut(required=False, help_text="when some reports are malformed")


def parse_report(item: Any) -> Report | dict[str, list[str]]:
    """One report, or its errors by field. By hand rather than through ReportIn (which only
    documents it): a gateway's batch of a thousand would cost a DRF serializer per report."""
    if not isinstance(item, dict):
        return {"non_field_errors": ["each report is an object"]}
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(item) - {"drone", "time", *RANGES})
    for name in unknown:
        errors[name] = ["unknown field"]
    drone = item.get("drone")
    if not isinstance(drone, str) or not SERIAL.match(drone) or len(drone) > 32:
        errors["drone"] = ["the drone's serial, 1 to 32 characters, not all whitespace"]
    moment: datetime | None = None
    raw_time = item.get("time")
    try:
        moment = parse_datetime(raw_time) if isinstance(raw_time, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        errors["time"] = ["an ISO 8601 time with a zone, e.g. 2026-05-01T14:30:00.250Z"]
        moment = None
    numbers: dict[str, float] = {}
    for name, (low, high) in RANGES.items():
        value = item.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors[name] = ["a number is required"]
        elif not math.isfinite(value) or not low <= value <= high:
            errors[name] = [f"must be between {low:g} and {high:g}"]
        else:
            numbers[name] = float(value)
    if errors or moment is None or not isinstance(drone, str):
        return errors
    return Report(drone=drone.strip(), time=moment, **numbers)


# The answer to a partly malformed batch (TelemetryOut) or to a malformed one (ErrorOut).
SHAPES_400 = ("TelemetryOut", "ErrorOut")


class TelemetryApi(APIView):
    authentication_classes = [TelemetryKeyAuthentication]
    # A gateway sends a batch a second; the business API's per-key limit is not for it.
    throttle_classes: list[Any] = []

    @extend_schema(
        summary="Report telemetry: a batch of drone positions; answers each drone's orders",
        description=(
            "Authenticate with `Authorization: Telemetry-Key <key>`: one drone's key, or a "
            "gateway's for the drones of its bases. Up to 1,000 reports a batch. Reports for "
            "another drone are refused per item; reports not newer than the last applied for "
            "their drone (out of order, duplicates) are ignored. Malformed items make the answer "
            "a 400 that names each item and field; the rest of the batch is applied all the same."
        ),
        request=TelemetryIn,
        responses={
            200: TelemetryOut,
            400: OpenApiResponse(
                # Either shape; ErrorOut's would match the first too, so not a oneOf.
                {"anyOf": [{"$ref": f"#/components/schemas/{name}"} for name in SHAPES_400]},
                description=(
                    "some reports are malformed (the answer for the others, with `error`), or "
                    "the batch is (only `error`)"
                ),
            ),
            401: OpenApiResponse(description="missing, invalid or revoked telemetry key"),
        },
    )
    def post(self, request: Request) -> Response:
        body = request.data
        unknown = sorted(set(body) - {"reports"}) if isinstance(body, dict) else []
        if unknown:
            raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        reports = body.get("reports") if isinstance(body, dict) else None
        if not isinstance(reports, list) or not reports:
            raise serializers.ValidationError({"reports": ["a list of 1 to 1,000 reports"]})
        if len(reports) > MAX_REPORTS:
            raise serializers.ValidationError(
                {"reports": [f"at most {MAX_REPORTS} reports a batch, not {len(reports)}"]}
            )
        parsed: list[tuple[int, Report]] = []
        malformed: list[dict[str, Any]] = []
        fields: dict[str, list[str]] = {}
        for index, item in enumerate(reports):
            report = parse_report(item)
            if isinstance(report, Report):
                parsed.append((index, report))
                continue
            drone = item.get("drone") if isinstance(item, dict) else None
            malformed.append(
                {
                    "index": index,
                    "drone": drone if isinstance(drone, str) else None,
                    "result": "malformed",
                    "fields": report,
                }
            )
            for name, messages in report.items():
                fields[f"reports[{index}].{name}"] = messages
        principal = request.user
        assert isinstance(principal, ReporterPrincipal)  # TelemetryKeyAuthentication's
        outcome = telemetry_apply(reporter=principal.reporter, reports=parsed)
        results: list[dict[str, Any]] = [
            {"index": r.index, "drone": r.drone, "result": r.result}
            | ({"reason": r.reason} if r.reason else {})
            for r in outcome.results
        ]
        results = sorted(results + malformed, key=lambda r: r["index"])
        counts = {kind: 0 for kind in ("accepted", "ignored", "refused", "malformed")}
        for r in results:
            counts[r["result"]] += 1
        answer: dict[str, Any] = {**counts, "results": results, "commands": outcome.commands}
        if malformed:
            answer["error"] = {
                "code": "invalid",
                "message": (
                    f"{len(malformed)} of {len(reports)} reports are malformed; "
                    f"the other {len(reports) - len(malformed)} were applied"
                ),
                "fields": fields,
            }
            return Response(represented(TelemetryOut, answer), status=status.HTTP_400_BAD_REQUEST)
        return Response(represented(TelemetryOut, answer), status=status.HTTP_200_OK)
