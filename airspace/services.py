"""Writes to no-fly zones: one zone, a GeoJSON import, activation, deletion; and the export.

Every door (admin, the staff API, `manage.py import_zones`) comes through here, so a zone is
always checked the same way (airspace.geometry), and every committed change bumps the Redis
counter `airspace:version` that tells each process to rebuild its airspace.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_redis import get_redis_connection
from redis.exceptions import RedisError
from shapely.geometry import mapping

from airspace.geometry import InvalidZone, zone_geometry_check
from airspace.models import NoFlyZone
from airspace.selectors import VERSION_KEY, zone_get
from portal.errors import Conflict, Unprocessable

logger = logging.getLogger(__name__)

NAME_MAX_LENGTH = NoFlyZone._meta.get_field("name").max_length or 100
# Zones are a few hundred; a file of more is a mistake (or not a zones file).
MAX_FEATURES = 5_000
# How many of an import's problems its error lists (then "and N more").
MAX_ERRORS_LISTED = 10
REASONS = tuple(NoFlyZone.Reason.values)


class InvalidZoneInput(Unprocessable):
    """A zone, or a feature of an import, that cannot be stored as given; the message says why."""

    code = "invalid_zone"


class InvalidImport(InvalidZoneInput):
    """An import refused: `problems` says what is wrong with each feature at fault."""

    def __init__(self, message: str, *, field: str | None, problems: list[str]) -> None:
        super().__init__(message, field=field)
        self.problems = problems


@dataclass(frozen=True)
class ZoneFields:
    """A zone's checked fields: what zone_upsert and zone_update write."""

    name: str
    reason: str
    geometry: dict[str, Any]
    active: bool = True
    valid_from: datetime | None = None
    valid_until: datetime | None = None


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int


# --- checks -----------------------------------------------------------------------------------


def zone_fields_check(
    *,
    name: Any,
    reason: Any,
    geometry: Any,
    active: Any = True,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
) -> ZoneFields:
    """The fields checked and normalized, or InvalidZoneInput naming the field and what is
    wrong. The geometry is stored as the checked shape's GeoJSON (a Feature's geometry alone)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidZoneInput("a zone needs a name", field="name")
    name = name.strip()
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidZoneInput(
            f"the name is {len(name)} characters long; at most {NAME_MAX_LENGTH}", field="name"
        )
    if reason not in REASONS:
        raise InvalidZoneInput(
            f"reason must be one of {', '.join(REASONS)}, not {reason!r}", field="reason"
        )
    if not isinstance(active, bool):
        raise InvalidZoneInput(f"active must be true or false, not {active!r}", field="active")
    for field, moment in (("valid_from", valid_from), ("valid_until", valid_until)):
        if moment is not None and timezone.is_naive(moment):
            raise InvalidZoneInput(f"{field} needs a time zone (e.g. Z for UTC)", field=field)
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise InvalidZoneInput(
            f"valid_until ({_iso(valid_until)}) must be later than valid_from ({_iso(valid_from)})",
            field="valid_until",
        )
    try:
        shape = zone_geometry_check(geometry)
    except InvalidZone as exc:
        raise InvalidZoneInput(exc.message, field="geometry") from exc
    return ZoneFields(
        name=name,
        reason=reason,
        geometry=_plain(mapping(shape)),
        active=active,
        valid_from=valid_from,
        valid_until=valid_until,
    )


def feature_fields(feature: Any) -> ZoneFields:
    """A GeoJSON Feature's zone: its geometry and the properties name, reason, active (default
    true), valid_from and valid_until (ISO 8601 with a zone, or null). Other properties are
    ignored. InvalidZoneInput's field is the member at fault (`properties.reason`)."""
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise InvalidZoneInput('not a GeoJSON Feature (an object with "type": "Feature")')
    properties = feature.get("properties")
    if not isinstance(properties, Mapping):
        raise InvalidZoneInput(
            "the feature has no properties (name, reason, active, valid_from, valid_until)",
            field="properties",
        )
    if feature.get("geometry") is None:
        raise InvalidZoneInput("the feature has no geometry", field="geometry")
    try:
        return zone_fields_check(
            name=properties.get("name"),
            reason=properties.get("reason"),
            geometry=feature["geometry"],
            active=properties.get("active", True),
            valid_from=_moment(properties.get("valid_from"), "valid_from"),
            valid_until=_moment(properties.get("valid_until"), "valid_until"),
        )
    except InvalidZoneInput as exc:
        where = exc.field if exc.field == "geometry" else f"properties.{exc.field}"
        raise InvalidZoneInput(exc.message, field=where) from exc


def _moment(value: Any, field: str) -> datetime | None:
    if value is None or value == "":
        return None
    parsed = None
    if isinstance(value, str):
        try:
            parsed = parse_datetime(value)
        except ValueError:
            parsed = None
    if parsed is None:
        raise InvalidZoneInput(
            f"{field} must be an ISO 8601 time such as 2026-05-01T14:30:00Z, not {value!r}",
            field=field,
        )
    if timezone.is_naive(parsed):
        raise InvalidZoneInput(
            f"{field} {value!r} has no time zone; add one (e.g. Z for UTC)", field=field
        )
    return parsed


def _plain(value: Any) -> Any:
    """shapely's mapping with lists for tuples: what JSON gives back, so stored == read."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- writes -----------------------------------------------------------------------------------


def zone_upsert(
    *,
    name: str,
    reason: str,
    geometry: Any,
    active: bool = True,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
) -> tuple[NoFlyZone, bool]:
    """Create the zone of this name, or update it; True when it was created."""
    fields = zone_fields_check(
        name=name,
        reason=reason,
        geometry=geometry,
        active=active,
        valid_from=valid_from,
        valid_until=valid_until,
    )
    with transaction.atomic():
        zone, created = _upsert(fields)
        _airspace_changed()
    return zone, created


def zone_update(
    *,
    zone_id: UUID | str,
    name: str,
    reason: str,
    geometry: Any,
    active: bool,
    valid_from: datetime | None,
    valid_until: datetime | None,
) -> NoFlyZone:
    """Replace every field of one zone (its name too)."""
    fields = zone_fields_check(
        name=name,
        reason=reason,
        geometry=geometry,
        active=active,
        valid_from=valid_from,
        valid_until=valid_until,
    )
    zone = zone_get(zone_id=zone_id)
    if NoFlyZone.objects.filter(name=fields.name).exclude(pk=zone.pk).exists():
        raise Conflict(f"another zone is named {fields.name!r}", field="name")
    for attribute, value in asdict(fields).items():
        setattr(zone, attribute, value)
    try:
        with transaction.atomic():
            zone.save()
            _airspace_changed()
    except IntegrityError as exc:  # renamed to a name taken in the meantime
        raise Conflict(f"another zone is named {fields.name!r}", field="name") from exc
    return zone


def zone_delete(*, zone_id: UUID | str) -> None:
    zone = zone_get(zone_id=zone_id)
    with transaction.atomic():
        zone.delete()
        _airspace_changed()


def zones_delete(*, zone_ids: Iterable[UUID]) -> int:
    with transaction.atomic():
        deleted, _ = NoFlyZone.objects.filter(pk__in=list(zone_ids)).delete()
        if deleted:
            _airspace_changed()
    return deleted


def zones_activate(*, zone_ids: Iterable[UUID], active: bool) -> int:
    """Turn zones on or off; how many changed."""
    with transaction.atomic():
        changed = (
            NoFlyZone.objects.filter(pk__in=list(zone_ids))
            .exclude(active=active)
            .update(active=active, updated_at=timezone.now())
        )
        if changed:
            _airspace_changed()
    return changed


def zones_import(collection: Any) -> ImportResult:
    """Upsert by name every feature of a GeoJSON FeatureCollection, all or nothing.

    Every feature is checked before anything is written; InvalidZoneInput lists each feature
    at fault by its index and name, and what is wrong with it.
    """
    features = _features(collection)
    checked: list[ZoneFields] = []
    problems: list[tuple[str, str]] = []  # (field, message)
    first_index: dict[str, int] = {}
    for index, feature in enumerate(features):
        label = _label(index, feature)
        try:
            fields = feature_fields(feature)
        except InvalidZoneInput as exc:
            where = f"features[{index}]" + (f".{exc.field}" if exc.field else "")
            problems.append((where, f"{label}: {exc.message}"))
            continue
        if fields.name in first_index:
            problems.append(
                (
                    f"features[{index}].properties.name",
                    f"{label}: feature {first_index[fields.name]} has the same name",
                )
            )
            continue
        first_index[fields.name] = index
        checked.append(fields)
    if problems:
        shown = [message for _, message in problems[:MAX_ERRORS_LISTED]]
        if len(problems) > MAX_ERRORS_LISTED:
            shown.append(f"and {len(problems) - MAX_ERRORS_LISTED} more")
        total = (
            f"{len(problems)} of {len(features)} features are invalid: "
            if len(problems) > 1
            else ""
        )
        raise InvalidImport(
            f"{total}{'; '.join(shown)} (nothing was imported)",
            field=problems[0][0],
            problems=[message for _, message in problems],
        )
    created = 0
    try:
        with transaction.atomic():
            for fields in checked:
                created += _upsert(fields)[1]
            _airspace_changed()
    except IntegrityError as exc:  # a zone of the same name created by someone else meanwhile
        raise Conflict("the zones changed during the import; nothing was imported, retry") from exc
    return ImportResult(created=created, updated=len(checked) - created)


def _features(collection: Any) -> list[Any]:
    if not isinstance(collection, Mapping) or collection.get("type") != "FeatureCollection":
        kind = collection.get("type") if isinstance(collection, Mapping) else None
        raise InvalidZoneInput(
            'expected a GeoJSON FeatureCollection ({"type": "FeatureCollection", "features": '
            f"[...]}}), not {f'a {kind}' if isinstance(kind, str) else 'this'}",
            field="type",
        )
    features = collection.get("features")
    if not isinstance(features, list):
        raise InvalidZoneInput("the FeatureCollection has no list of features", field="features")
    if len(features) > MAX_FEATURES:
        raise InvalidZoneInput(
            f"{len(features)} features; at most {MAX_FEATURES:,} in one import", field="features"
        )
    return features


def _label(index: int, feature: Any) -> str:
    properties = feature.get("properties") if isinstance(feature, Mapping) else None
    name = properties.get("name") if isinstance(properties, Mapping) else None
    if isinstance(name, str) and name.strip():
        return f'feature {index} ("{name.strip()}")'
    return f"feature {index} (no name)"


def _upsert(fields: ZoneFields) -> tuple[NoFlyZone, bool]:
    values = asdict(fields)
    return NoFlyZone.objects.update_or_create(name=values.pop("name"), defaults=values)


def _airspace_changed() -> None:
    """Tell every process, once this transaction commits, to rebuild its airspace."""
    transaction.on_commit(_version_bump)


def _version_bump() -> None:
    try:
        get_redis_connection("default").incr(VERSION_KEY)
    except RedisError:
        # The change is committed; processes rebuild from the database within
        # selectors.MAX_AGE_SECONDS even without the signal.
        logger.exception("airspace changed but %s could not be incremented", VERSION_KEY)


# --- export -----------------------------------------------------------------------------------


def zones_export(queryset: QuerySet[NoFlyZone] | None = None) -> dict[str, Any]:
    """The zones (all by default) as a FeatureCollection that zones_import takes back."""
    zones = NoFlyZone.objects.all() if queryset is None else queryset
    return {
        "type": "FeatureCollection",
        "features": [zone_feature(zone) for zone in zones.order_by("name")],
    }


def zone_feature(zone: NoFlyZone) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": str(zone.pk),
        "geometry": zone.geometry,
        "properties": {
            "name": zone.name,
            "reason": zone.reason,
            "active": zone.active,
            "valid_from": _iso(zone.valid_from) if zone.valid_from else None,
            "valid_until": _iso(zone.valid_until) if zone.valid_until else None,
        },
    }
