"""Telemetry in through HTTP: stages read from positions, ETAs, keys and their scope, reports out
of order, malformed items, drones that go silent, and operators grounding drones."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client, override_settings
from django.utils import timezone

from deliveries import live, services
from deliveries.models import Delivery, DeliveryEvent
from drones import flight
from drones.geo import Point, distance_km
from drones.models import Base, Drone
from drones.services import fleet_seed, telemetry_key_create, telemetry_key_revoke
from drones.telemetry import drone_ground, drone_return_to_service, drones_watch
from tests.conftest import CENTER, Tenant, delivery_body, make_fleet

TELEMETRY = "/api/v1/telemetry"
PICKUP = Point(47.6097, -122.3422)
DROPOFF = Point(47.6205, -122.3493)


class Gateway:
    """A ground-control gateway posting batches with its key; the clock moves as it reports."""

    def __init__(self, key: str) -> None:
        self.client = Client(HTTP_AUTHORIZATION=f"Telemetry-Key {key}")
        self.now = timezone.now() - timedelta(minutes=5)

    def post(self, *reports: Any) -> Any:
        return self.client.post(
            TELEMETRY, {"reports": list(reports)}, content_type="application/json"
        )

    def report(
        self,
        drone: Drone,
        at: Point,
        alt_m: float,
        *,
        seconds: float = 1.0,
        speed: float = 16.0,
        battery: float = 90.0,
        time: datetime | None = None,
    ) -> dict[str, Any]:
        if time is None:
            self.now += timedelta(seconds=seconds)
            time = self.now
        return {
            "drone": drone.serial,
            "time": time.isoformat().replace("+00:00", "Z"),
            "lat": at.lat,
            "lon": at.lon,
            "alt_m": alt_m,
            "ground_speed_mps": speed,
            "heading": 0.0,
            "battery_pct": battery,
        }

    def send(self, drone: Drone, at: Point, alt_m: float, **kwargs: Any) -> Any:
        response = self.post(self.report(drone, at, alt_m, **kwargs))
        assert response.status_code == 200, response.json()
        return response.json()


@pytest.fixture
def drone(db: None) -> Drone:
    return make_fleet(1)[0]


@pytest.fixture
def gateway(drone: Drone) -> Gateway:
    _, key = telemetry_key_create(name="gateway", base_ids=[drone.base_id])
    return Gateway(key)


def booked(tenant: Tenant, **overrides: Any) -> Delivery:
    """A delivery accepted through the API and assigned by the workflow's service."""
    response = tenant.client.post_json("/api/v1/deliveries", delivery_body(**overrides))
    assert response.status_code == 202, response.json()
    outcome = services.delivery_assign(delivery_id=uuid.UUID(response.json()["id"]))
    assert outcome.result == "assigned"
    return Delivery.objects.get(pk=response.json()["id"])


def statuses(delivery: Delivery) -> list[str]:
    # In the order they were written (the gateway's clock runs behind the test's).
    events = DeliveryEvent.objects.filter(delivery=delivery).order_by("id")
    return list(events.values_list("status", flat=True))


def fly_delivery(gateway: Gateway, drone: Drone, delivery: Delivery) -> None:
    """Take off, cruise, hover over the pickup, climb, the same at the dropoff, fly home, land."""
    home = Point(drone.base.lat, drone.base.lon)
    gateway.send(drone, home, 10.0)
    gateway.send(drone, flight.interpolate(home, PICKUP, 0.5), 60.0, seconds=30)
    gateway.send(drone, PICKUP, 5.0, seconds=30)
    gateway.send(drone, PICKUP, 15.0, seconds=30)
    gateway.send(drone, flight.interpolate(PICKUP, DROPOFF, 0.5), 60.0, seconds=20)
    gateway.send(drone, DROPOFF, 5.0, seconds=20)
    gateway.send(drone, DROPOFF, 15.0, seconds=30)
    gateway.send(drone, flight.interpolate(DROPOFF, home, 0.5), 60.0, seconds=30)
    gateway.send(drone, home, 0.0, seconds=30, battery=70.0)


# --- a flight --------------------------------------------------------------------------------


def test_a_flight_moves_its_delivery_through_every_stage_with_an_event_where_it_happened(
    tenant: Tenant, drone: Drone, gateway: Gateway
) -> None:
    delivery = booked(tenant)
    fly_delivery(gateway, drone, delivery)

    assert statuses(delivery) == [
        "requested", "assigned", "en_route_to_pickup", "at_pickup", "en_route_to_dropoff",
        "at_dropoff", "delivered",
    ]  # fmt: skip
    at_pickup = DeliveryEvent.objects.get(delivery=delivery, status="at_pickup")
    assert (at_pickup.lat, at_pickup.lon, at_pickup.alt_m) == (PICKUP.lat, PICKUP.lon, 5.0)
    delivered = DeliveryEvent.objects.get(delivery=delivery, status="delivered")
    assert delivered.note == "delivered" and delivered.alt_m == 15.0
    # Released at the dropoff, flying home; idle and free for the next delivery once landed.
    drone.refresh_from_db()
    assert drone.assigned_delivery_id is None
    assert (drone.state, drone.battery_pct) == ("idle", 70.0)
    assert (drone.lat, drone.lon) == (drone.base.lat, drone.base.lon)
    assert booked(tenant).drone_id == drone.pk


def test_the_drone_is_told_its_delivery_then_to_come_home_then_to_stand_by(
    tenant: Tenant, drone: Drone, gateway: Gateway
) -> None:
    home = Point(drone.base.lat, drone.base.lon)
    assert gateway.send(drone, home, 0.0)["commands"][drone.serial] == {"type": "stand_by"}
    delivery = booked(tenant)
    orders = gateway.send(drone, home, 0.0)["commands"][drone.serial]
    assert orders["type"] == "deliver" and orders["delivery_id"] == str(delivery.pk)
    assert orders["pickup"] == {"lat": PICKUP.lat, "lon": PICKUP.lon}
    assert orders["routes"]["to_dropoff"] == [[PICKUP.lat, PICKUP.lon], [DROPOFF.lat, DROPOFF.lon]]
    assert orders["takeoff_at"] is None
    gateway.send(drone, home, 20.0)
    services.delivery_cancel(business_id=tenant.business.pk, delivery_id=delivery.pk)
    orders = gateway.send(drone, flight.interpolate(home, PICKUP, 0.2), 60.0)["commands"]
    assert orders[drone.serial]["type"] == "return_to_base"
    orders = gateway.send(drone, home, 0.0)["commands"]
    assert orders[drone.serial] == {"type": "stand_by"}
    assert Drone.objects.get(pk=drone.pk).state == "idle"


def test_the_eta_counts_down_from_the_drones_position_and_recent_speed(
    tenant: Tenant, drone: Drone, gateway: Gateway
) -> None:
    delivery = booked(tenant)
    home = Point(drone.base.lat, drone.base.lon)
    gateway.send(drone, home, 10.0)
    gateway.send(drone, PICKUP, 5.0, seconds=30)
    gateway.send(drone, PICKUP, 15.0, seconds=30)
    headwind_mps = 50 / 3.6  # slower than the model's 60 km/h
    remaining = []
    for fraction in (0.2, 0.6):
        here = flight.interpolate(PICKUP, DROPOFF, fraction)
        gateway.send(drone, here, 60.0, seconds=10, speed=headwind_mps)
        status = live.status_read(delivery.pk)
        assert status is not None and status["status"] == "en_route_to_dropoff"
        assert status["drone_location"]["lat"] == pytest.approx(here.lat)
        eta = datetime.fromisoformat(status["dropoff_eta"].replace("Z", "+00:00"))
        # The rest of the leg at the drone's own 50 km/h, the descent, the handling.
        expected = distance_km(here, DROPOFF) / 50 * 3600 + 55 / 4 + flight.HANDLING_SECONDS
        assert (eta - gateway.now).total_seconds() == pytest.approx(expected, abs=1)
        remaining.append((eta - gateway.now).total_seconds())
    assert remaining[1] < remaining[0]


# --- keys and their scope -------------------------------------------------------------------


def test_a_drones_key_reports_only_for_that_drone_and_refuses_the_others_per_item(
    drone: Drone,
) -> None:
    other = make_fleet(1)[0]
    _, key = telemetry_key_create(name="FD own", drone_id=drone.pk)
    gateway = Gateway(key)
    home = Point(drone.base.lat, drone.base.lon)
    response = gateway.post(
        gateway.report(drone, home, 0.0),
        gateway.report(other, home, 0.0),
        gateway.report(Drone(serial="NOPE-1"), home, 0.0),
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["refused"]) == (1, 2)
    results = body["results"]
    assert results[0]["result"] == "accepted"
    assert results[1] == {
        "index": 1, "drone": other.serial, "result": "refused",
        "reason": f"this key may not report for {other.serial}",
    }  # fmt: skip
    assert results[2]["reason"] == "there is no drone NOPE-1"
    assert set(body["commands"]) == {drone.serial}
    assert Drone.objects.get(pk=other.pk).last_report_at is None


def test_a_gateway_reports_for_the_drones_of_its_bases_only(drone: Drone) -> None:
    elsewhere = Base.objects.create(name="Elsewhere", lat=47.65, lon=-122.35)
    stranger = make_fleet(1)[0]
    Drone.objects.filter(pk=stranger.pk).update(base=elsewhere)
    _, key = telemetry_key_create(name="gateway", base_ids=[drone.base_id])
    gateway = Gateway(key)
    here = Point(drone.base.lat, drone.base.lon)
    body = gateway.post(gateway.report(drone, here, 0.0), gateway.report(stranger, here, 0.0))
    assert [r["result"] for r in body.json()["results"]] == ["accepted", "refused"]


def test_a_missing_wrong_or_revoked_key_is_401(drone: Drone) -> None:
    record, key = telemetry_key_create(name="soon revoked", drone_id=drone.pk)
    report = Gateway(key).report(drone, CENTER, 0.0)
    anonymous = Client().post(TELEMETRY, {"reports": [report]}, content_type="application/json")
    assert anonymous.status_code == 401
    wrong = Gateway(key[:-3] + "xyz")
    assert wrong.post(report).status_code == 401
    assert Gateway(key).post(report).status_code == 200
    telemetry_key_revoke(prefix=record.prefix)
    response = Gateway(key).post(report)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Telemetry-Key"


# --- what is not applied -------------------------------------------------------------------


def test_out_of_order_and_duplicate_reports_are_ignored_not_applied(
    drone: Drone, gateway: Gateway
) -> None:
    home = Point(drone.base.lat, drone.base.lon)
    newer = gateway.report(drone, flight.interpolate(home, PICKUP, 0.5), 60.0, seconds=10)
    older = gateway.report(drone, home, 20.0, time=gateway.now - timedelta(seconds=5))
    first = gateway.post(newer).json()
    assert first["accepted"] == 1
    late = gateway.post(older, newer).json()
    assert [r["result"] for r in late["results"]] == ["ignored", "ignored"]
    assert late["results"][0]["reason"] == "not newer than the last report applied"
    stored = Drone.objects.get(pk=drone.pk)
    assert stored.alt_m == 60.0
    assert stored.last_report_at == datetime.fromisoformat(newer["time"].replace("Z", "+00:00"))


def test_reports_of_one_batch_are_applied_in_time_order(drone: Drone, gateway: Gateway) -> None:
    home = Point(drone.base.lat, drone.base.lon)
    first = gateway.report(drone, home, 20.0)
    second = gateway.report(drone, home, 40.0)
    body = gateway.post(second, first).json()
    # The batch's order is not the clock's: the earlier one is applied first, then the later.
    assert body["accepted"] == 2
    assert Drone.objects.get(pk=drone.pk).alt_m == 40.0


def test_malformed_items_are_a_400_naming_the_item_and_field_and_the_rest_is_kept(
    drone: Drone, gateway: Gateway
) -> None:
    good = gateway.report(drone, Point(drone.base.lat, drone.base.lon), 30.0)
    bad_lat = {**gateway.report(drone, CENTER, 30.0), "lat": 95}
    no_zone = {**good, "time": "2026-11-30T12:00:00"}
    response = gateway.post(bad_lat, good, no_zone, "not an object")
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["fields"]["reports[0].lat"] == ["must be between -90 and 90"]
    assert "reports[2].time" in body["error"]["fields"]
    assert "reports[3].non_field_errors" in body["error"]["fields"]
    assert "3 of 4 reports are malformed; the other 1 were applied" in body["error"]["message"]
    assert [r["result"] for r in body["results"]] == [
        "malformed", "accepted", "malformed", "malformed",
    ]  # fmt: skip
    assert Drone.objects.get(pk=drone.pk).alt_m == 30.0
    assert gateway.post().status_code == 400  # an empty batch
    too_many = [good] * 1001
    assert (
        gateway.client.post(
            TELEMETRY, {"reports": too_many}, content_type="application/json"
        ).status_code
        == 400
    )


# --- drones that go silent ----------------------------------------------------------------


def test_a_silent_drone_is_lost_never_assigned_and_flagged_then_recovers(
    tenant: Tenant, drone: Drone, gateway: Gateway
) -> None:
    delivery = booked(tenant)
    home = Point(drone.base.lat, drone.base.lon)
    gateway.send(drone, home, 10.0, time=timezone.now() - timedelta(seconds=40))
    gateway.send(drone, home, 30.0, time=timezone.now() - timedelta(seconds=35))

    assert drones_watch() == 1
    drone.refresh_from_db()
    assert drone.state == "lost"
    flagged = Delivery.objects.get(pk=delivery.pk)
    assert flagged.attention.startswith(f"drone {drone.serial} lost contact")
    event = DeliveryEvent.objects.filter(delivery=delivery).latest("id")
    assert event.note.startswith(f"drone {drone.serial} lost contact") and event.alt_m == 30.0
    assert drones_watch() == 0  # marked once

    gateway.send(drone, flight.interpolate(home, PICKUP, 0.3), 60.0, time=timezone.now())
    drone.refresh_from_db()
    assert drone.state == "flying"
    assert Delivery.objects.get(pk=delivery.pk).attention == ""
    assert DeliveryEvent.objects.filter(delivery=delivery).latest("id").note == "back to normal"


def test_a_lost_drone_is_never_assigned(tenant: Tenant, drone: Drone, gateway: Gateway) -> None:
    home = Point(drone.base.lat, drone.base.lon)
    gateway.send(drone, home, 0.0, time=timezone.now() - timedelta(seconds=60))
    assert drones_watch() == 1
    response = tenant.client.post_json("/api/v1/deliveries", delivery_body())
    outcome = services.delivery_assign(delivery_id=uuid.UUID(response.json()["id"]))
    assert outcome.result == "wait"
    gateway.send(drone, home, 0.0, time=timezone.now())
    assert Drone.objects.get(pk=drone.pk).state == "idle"


def test_a_gateway_gone_silent_loses_its_drones_together_in_one_log_line(
    tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    """30 drones stop reporting at once: they are marked in one run, the two carrying
    deliveries have them flagged, and the log says so in one line; a drone heard since (its
    report in Redis only) and one an operator grounded are left as they are."""
    fleet = make_fleet(33)
    _, key = telemetry_key_create(name="gateway", base_ids=[fleet[0].base_id])
    gateway = Gateway(key)
    home = Point(fleet[0].base.lat, fleet[0].base.lon)
    carrying = [booked(tenant), booked(tenant)]
    stored = Drone.objects.filter(pk__in=[d.pk for d in fleet], assigned_delivery_id__isnull=False)
    loaded = {d.assigned_delivery_id: d.serial for d in stored}
    assert set(loaded) == {d.pk for d in carrying}
    silent_since = timezone.now() - timedelta(seconds=45)
    for drone in fleet:
        gateway.send(drone, home, 12.0, time=silent_since)
    free = [d for d in fleet if d.serial not in loaded.values()]
    heard, grounded = free[-2], free[-1]
    drone_ground(drone_id=grounded.pk)
    # The database keeps positions every few seconds; the drone's latest report is in Redis.
    with override_settings(TELEMETRY_DB_WRITE_SECONDS=3600):
        gateway.send(heard, home, 12.0, time=timezone.now() - timedelta(seconds=2))
    stored_report = Drone.objects.get(pk=heard.pk).last_report_at
    assert stored_report is not None and stored_report < silent_since + timedelta(seconds=1)

    with caplog.at_level("WARNING", logger="drones.telemetry"):
        assert drones_watch() == 31
    lost = set(Drone.objects.filter(state="lost").values_list("serial", flat=True))
    assert lost == {d.serial for d in fleet} - {heard.serial, grounded.serial}
    assert Drone.objects.get(pk=heard.pk).state != "lost"
    assert Drone.objects.get(pk=grounded.pk).state == "grounded"
    lines = [r.getMessage() for r in caplog.records if "lost contact" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("31 drones lost contact: T-")
    assert lines[0].endswith(" and 11 more")
    for delivery in carrying:
        flagged = Delivery.objects.get(pk=delivery.pk)
        assert flagged.attention.startswith(f"drone {loaded[delivery.pk]} lost contact (last")
        event = DeliveryEvent.objects.filter(delivery=delivery).latest("id")
        assert event.note == flagged.attention and event.alt_m == 12.0
    assert drones_watch() == 0  # marked once


@pytest.mark.django_db(transaction=True)
def test_a_delivery_locked_by_a_report_being_written_leaves_its_drone_for_the_next_run(
    tenant: Tenant,
) -> None:
    """drones_watch waits for no lock (so it cannot deadlock with a report's transaction): a
    drone whose delivery row another transaction holds is left alone and marked by the next
    run, its delivery flagged with it; the other silent drone is marked at once."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no row locks: its writers take turns for the whole database")
    fleet = make_fleet(2)
    _, key = telemetry_key_create(name="gateway", base_ids=[fleet[0].base_id])
    gateway = Gateway(key)
    first, second = booked(tenant), booked(tenant)
    for drone in fleet:
        gateway.send(drone, PICKUP, 30.0, time=timezone.now() - timedelta(seconds=45))
    held_drone = Drone.objects.get(assigned_delivery_id=first.pk)
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                Delivery.objects.select_for_update().get(pk=first.pk)
                locked.set()
                release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(10)
        assert drones_watch() == 1
    finally:
        release.set()
        holder.join(30)
    assert Drone.objects.get(pk=held_drone.pk).state != "lost"
    assert Delivery.objects.get(pk=first.pk).attention == ""
    assert Delivery.objects.get(pk=second.pk).attention.startswith("drone ")
    assert drones_watch() == 1
    assert Drone.objects.get(pk=held_drone.pk).state == "lost"
    assert Delivery.objects.get(pk=first.pk).attention.startswith(
        f"drone {held_drone.serial} lost contact"
    )


def test_a_silent_drone_whose_delivery_is_gone_is_still_marked_lost(tenant: Tenant) -> None:
    """Its delivery row removed (a finished delivery an operator deleted while the drone still
    pointed at it): nothing to flag, and the drone is marked lost all the same."""
    (drone,) = make_fleet(1)
    _, key = telemetry_key_create(name="gateway", base_ids=[drone.base_id])
    Gateway(key).send(drone, PICKUP, 30.0, time=timezone.now() - timedelta(seconds=45))
    Drone.objects.filter(pk=drone.pk).update(assigned_delivery_id=uuid.uuid4())
    assert drones_watch() == 1
    assert Drone.objects.get(pk=drone.pk).state == "lost"


def test_a_drone_that_never_reported_is_not_lost(drone: Drone) -> None:
    assert drones_watch() == 0
    assert Drone.objects.get(pk=drone.pk).state == "idle"


# --- operators ground drones ----------------------------------------------------------------


def test_grounding_a_booked_drone_on_the_ground_gives_its_delivery_another_drone(
    tenant: Tenant, drone: Drone, gateway: Gateway
) -> None:
    delivery = booked(tenant)
    assert delivery.drone_id == drone.pk
    spare = make_fleet(1)[0]

    drone_ground(drone_id=drone.pk)

    waiting = Delivery.objects.get(pk=delivery.pk)
    assert (waiting.status, waiting.drone_id) == ("requested", None)
    assert "grounded" in DeliveryEvent.objects.filter(delivery=delivery).latest("id").note
    outcome = services.delivery_assign(delivery_id=delivery.pk, attempt=waiting.attempts)
    assert outcome.delivery is not None and outcome.delivery.drone_id == spare.pk
    home = Point(drone.base.lat, drone.base.lon)
    assert gateway.send(drone, home, 0.0)["commands"][drone.serial] == {"type": "stand_by"}


def test_grounding_a_drone_in_the_air_sends_it_home_and_its_delivery_back_for_another(
    tenant: Tenant, drone: Drone, gateway: Gateway
) -> None:
    delivery = booked(tenant)
    home = Point(drone.base.lat, drone.base.lon)
    gateway.send(drone, home, 10.0)
    out = flight.interpolate(home, PICKUP, 0.5)
    assert gateway.send(drone, out, 60.0)["commands"][drone.serial]["type"] == "deliver"

    drone_ground(drone_id=drone.pk)

    assert Delivery.objects.get(pk=delivery.pk).status == "requested"
    orders = gateway.send(drone, out, 60.0)["commands"][drone.serial]
    assert orders["type"] == "return_to_base" and orders["base"] == {
        "lat": home.lat, "lon": home.lon,
    }  # fmt: skip
    gateway.send(drone, home, 0.0, seconds=60)
    assert Drone.objects.get(pk=drone.pk).state == "grounded"  # landed, still out of service

    assert drone_return_to_service(drone_id=drone.pk).state == "idle"


def test_grounding_a_drone_with_the_package_aboard_flags_the_delivery_for_operators(
    tenant: Tenant, drone: Drone, gateway: Gateway
) -> None:
    delivery = booked(tenant)
    home = Point(drone.base.lat, drone.base.lon)
    gateway.send(drone, home, 10.0)
    gateway.send(drone, PICKUP, 5.0, seconds=30)
    gateway.send(drone, PICKUP, 15.0, seconds=30)
    assert Delivery.objects.get(pk=delivery.pk).status == "en_route_to_dropoff"

    drone_ground(drone_id=drone.pk)

    aboard = Delivery.objects.get(pk=delivery.pk)
    assert aboard.status == "en_route_to_dropoff"
    assert "package aboard" in aboard.attention
    orders = gateway.send(drone, PICKUP, 60.0)["commands"][drone.serial]
    assert orders["type"] == "return_to_base"


def test_a_grounded_drone_is_never_assigned_until_returned_to_service(
    tenant: Tenant, drone: Drone
) -> None:
    drone_ground(drone_id=drone.pk)
    response = tenant.client.post_json("/api/v1/deliveries", delivery_body())
    outcome = services.delivery_assign(delivery_id=uuid.UUID(response.json()["id"]))
    assert outcome.result == "wait"
    drone_return_to_service(drone_id=drone.pk)
    assert Drone.objects.get(pk=drone.pk).state == "idle"


# --- the fleet grows ---------------------------------------------------------------------


@override_settings(FLEET_SHAPE_CACHE_SECONDS=30)
def test_a_drone_added_by_seed_fleet_serves_the_very_next_request(tenant: Tenant) -> None:
    make_fleet(1)
    far = Point(47.80, -122.20)  # 25 km from the only base: out of every drone's range
    body = delivery_body(
        pickup={"lat": far.lat, "lon": far.lon}, dropoff={"lat": far.lat + 0.01, "lon": far.lon}
    )
    refused = tenant.client.post_json("/api/v1/deliveries", body)
    assert refused.status_code == 422
    fleet_seed(count=2, center=far, radius_km=1.0, seed=3)
    accepted = tenant.client.post_json("/api/v1/deliveries", body)
    assert accepted.status_code == 202, accepted.json()


def test_the_eta_follows_the_planned_route_around_a_zone_not_the_straight_line(
    tenant: Tenant, drone: Drone, gateway: Gateway
) -> None:
    delivery = booked(tenant)
    home = Point(drone.base.lat, drone.base.lon)
    # A detour through a waypoint 1 km east of the midpoint, as a route around a zone is.
    middle = flight.interpolate(PICKUP, DROPOFF, 0.5)
    east = Point(middle.lat, middle.lon + 1 / (111.2 * 0.674))
    detour = [[PICKUP.lat, PICKUP.lon], [east.lat, east.lon], [DROPOFF.lat, DROPOFF.lon]]
    Delivery.objects.filter(pk=delivery.pk).update(
        route={**(delivery.route or {}), "to_dropoff": detour}
    )
    gateway.send(drone, home, 10.0)
    gateway.send(drone, PICKUP, 5.0, seconds=30)
    gateway.send(drone, PICKUP, 15.0, seconds=30)
    start = flight.interpolate(PICKUP, east, 0.1)
    gateway.send(drone, start, 60.0, seconds=10, speed=60 / 3.6)

    status = live.status_read(delivery.pk)
    assert status is not None
    eta = datetime.fromisoformat(status["dropoff_eta"].replace("Z", "+00:00"))
    km_left = distance_km(start, east) + distance_km(east, DROPOFF)
    expected = km_left / 60 * 3600 + 55 / 4 + flight.HANDLING_SECONDS
    assert (eta - gateway.now).total_seconds() == pytest.approx(expected, abs=1)
    assert km_left > distance_km(start, DROPOFF) + 0.5  # the straight line would be sooner


def test_a_zone_due_to_open_within_the_hour_reroutes_flights_once(
    tenant: Tenant, drone: Drone, gateway: Gateway
) -> None:
    from airspace.services import zone_upsert
    from drones.telemetry import flights_reroute

    delivery = booked(tenant)
    home = Point(drone.base.lat, drone.base.lon)
    gateway.send(drone, home, 10.0, time=timezone.now() - timedelta(seconds=20))
    gateway.send(drone, PICKUP, 5.0, time=timezone.now() - timedelta(seconds=10))
    gateway.send(drone, PICKUP, 15.0, time=timezone.now() - timedelta(seconds=5))
    assert flights_reroute() == 0  # nothing in the way: the routes stay
    middle = flight.interpolate(PICKUP, DROPOFF, 0.5)
    half_lat, half_lon = 0.2 / 111.2, 0.2 / (111.2 * 0.674)
    ring = [
        [middle.lon - half_lon, middle.lat - half_lat],
        [middle.lon + half_lon, middle.lat - half_lat],
        [middle.lon + half_lon, middle.lat + half_lat],
        [middle.lon - half_lon, middle.lat + half_lat],
        [middle.lon - half_lon, middle.lat - half_lat],
    ]
    zone_upsert(
        name="Parade",
        reason="temporary_flight_restriction",
        geometry={"type": "Polygon", "coordinates": [ring]},
        valid_from=timezone.now() + timedelta(minutes=30),
    )

    assert flights_reroute() == 1
    rerouted = Delivery.objects.get(pk=delivery.pk)
    assert rerouted.route_version == delivery.route_version + 1
    assert rerouted.route is not None and len(rerouted.route["to_dropoff"]) > 2
    assert flights_reroute() == 0  # the same zones: nothing planned again
    orders = gateway.send(drone, PICKUP, 20.0, time=timezone.now())["commands"][drone.serial]
    assert orders["route_version"] == rerouted.route_version
    assert orders["routes"]["to_dropoff"] == rerouted.route["to_dropoff"]
