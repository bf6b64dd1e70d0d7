"""The fleet simulator: its drones fly the flight profile the server reads stages from, report
every stage boundary at any speedup, and fly the fleet through the telemetry API."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devtools.localservices import free_port
from drones import flight
from drones.geo import Point, distance_km
from drones.models import Drone
from drones.simulator import (
    LEAVING_ALT_M,
    HttpTransport,
    Report,
    SimDrone,
    Simulator,
    gateway_key_create,
    iso_ms,
)
from tests.conftest import Tenant, database_url, make_fleet
from tests.drones.fleet import HERE, offset
from tests.support import BASE_DIR, PYTHON, stop_process_group, wait_for

BASE = HERE
PICKUP = offset(HERE, north_km=2.0)
DROPOFF = offset(PICKUP, east_km=3.0)
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()
SPEED_KMH = 60.0


def sim_drone(
    *, position: Point = BASE, alt_m: float = 0.0, battery_pct: float = 100.0
) -> SimDrone:
    return SimDrone(
        "FD-0001",
        speed_kmh=SPEED_KMH,
        range_km=30.0,
        max_payload_kg=5.0,
        base=BASE,
        position=position,
        alt_m=alt_m,
        battery_pct=battery_pct,
    )


def latlon(point: Point) -> list[float]:
    return [point.lat, point.lon]


def deliver(
    *,
    stage: str = "assigned",
    start: Point = BASE,
    takeoff_at: float | None = None,
    payload_kg: float = 2.0,
    delivery_id: str = "8c5e0a52-7bd8-4d0f-9a43-5f1b2b0c7e11",
) -> dict[str, Any]:
    """A deliver command as the server sends it."""
    return {
        "type": "deliver",
        "delivery_id": delivery_id,
        "stage": stage,
        "takeoff_at": iso_ms(round(takeoff_at * 1000)) if takeoff_at is not None else None,
        "payload_kg": payload_kg,
        "pickup": {"lat": PICKUP.lat, "lon": PICKUP.lon},
        "dropoff": {"lat": DROPOFF.lat, "lon": DROPOFF.lon},
        "base": {"lat": BASE.lat, "lon": BASE.lon},
        "routes": {
            "to_pickup": [latlon(start), latlon(PICKUP)],
            "to_dropoff": [latlon(PICKUP), latlon(DROPOFF)],
            "to_base": [latlon(DROPOFF), latlon(BASE)],
        },
    }


def fly(drone: SimDrone, *, start: float, seconds: float, speedup: float) -> list[Report]:
    """Ticks of one real second: every report the drone sends, in order."""
    reports: list[Report] = []
    t = start
    while t < start + seconds - 1e-9:
        drone.advance(t, t + 1.0, speedup)
        last = drone.tick_report(t + 1.0)
        reports += drone.unsent + ([last] if last else [])
        drone.unsent = []
        t += 1.0
    return reports


def at(report: Report) -> float:
    return datetime.fromisoformat(report["time"]).timestamp()


def where(report: Report) -> tuple[Point, float]:
    return Point(report["lat"], report["lon"]), report["alt_m"]


def stages_seen(reports: list[Report], *, status: str = "assigned") -> list[tuple[str, float]]:
    """What the server makes of the reports (drones.telemetry reads stages the same way): each
    stage reached, with the time of the report that showed it."""
    seen: list[tuple[str, float]] = []
    for report in reports:
        position, alt = where(report)
        while True:
            if status == "assigned" and flight.is_airborne(alt):
                status = "en_route_to_pickup"
            elif status == "en_route_to_pickup" and flight.arrived_at(position, alt, PICKUP):
                status = "at_pickup"
            elif status == "at_pickup" and flight.left(position, alt, PICKUP):
                status = "en_route_to_dropoff"
            elif status == "en_route_to_dropoff" and flight.arrived_at(position, alt, DROPOFF):
                status = "at_dropoff"
            elif status == "at_dropoff" and flight.left(position, alt, DROPOFF):
                status = "delivered"
            elif status == "delivered" and flight.landed_at(position, alt, BASE):
                status = "landed"
            else:
                break
            seen.append((status, at(report)))
    return seen


ALL_STAGES = [
    "en_route_to_pickup",
    "at_pickup",
    "en_route_to_dropoff",
    "at_dropoff",
    "delivered",
    "landed",
]


# --- the flight -------------------------------------------------------------------------------


@pytest.mark.parametrize("speedup", [1.0, 30.0])
def test_a_delivery_takes_as_long_as_the_delivery_schedule_says(
    speedup: float, settings: Any
) -> None:
    settings.FLEET_SIM_SPEEDUP = speedup
    drone = sim_drone()
    takeoff = T0 + 10.0
    drone.obey(deliver(takeoff_at=takeoff))

    reports = fly(drone, start=T0, seconds=1500 / speedup, speedup=speedup)

    stages = dict(stages_seen(reports))
    assert list(stages) == ALL_STAGES
    schedule = flight.delivery_schedule(
        to_pickup_km=distance_km(BASE, PICKUP),
        leg_km=distance_km(PICKUP, DROPOFF),
        speed_kmh=SPEED_KMH,
    )
    assert stages["at_pickup"] - takeoff == pytest.approx(schedule.to_pickup, rel=0.01)
    assert stages["delivered"] - takeoff == pytest.approx(
        schedule.to_pickup + schedule.pickup_to_delivered, rel=0.01
    )


def test_every_stage_boundary_is_reported_even_when_a_tick_spans_the_whole_mission() -> None:
    drone = sim_drone()
    drone.obey(deliver())

    # At 1000x one real second is 1000 s of flight: the whole mission in one tick.
    reports = fly(drone, start=T0, seconds=2, speedup=1000.0)

    assert [stage for stage, _ in stages_seen(reports)] == ALL_STAGES
    times = [at(r) for r in reports]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert times[0] > T0 and times[-1] <= T0 + 2
    # The arrivals over the stops are at the handling altitude, and the first report of the
    # climb away from a stop is just above where the server sees the drone leave.
    altitudes = [r["alt_m"] for r in reports]
    assert altitudes.count(flight.HANDLING_ALT_M) == 2
    assert altitudes.count(round(LEAVING_ALT_M, 2)) == 3  # the base, the pickup, the dropoff
    assert reports[-1]["alt_m"] == 0.0


def test_a_cruising_drone_reports_the_real_clock_and_its_apparent_speed() -> None:
    drone = sim_drone()
    drone.obey(deliver())

    reports = fly(drone, start=T0, seconds=3, speedup=30.0)

    cruising = [r for r in reports if r["alt_m"] == flight.CRUISE_ALT_M]
    assert cruising
    assert cruising[0]["ground_speed_mps"] == pytest.approx(SPEED_KMH / 3.6 * 30, rel=1e-3)
    assert cruising[0]["heading"] == pytest.approx(flight.bearing_deg(BASE, PICKUP), abs=0.1)
    assert reports[-1]["time"] == iso_ms(round((T0 + 3) * 1000))
    assert reports[-1]["time"].endswith(".000Z")


def test_the_drone_waits_on_the_ground_until_takeoff_at() -> None:
    drone = sim_drone()
    drone.obey(deliver(takeoff_at=T0 + 30.5))

    reports = fly(drone, start=T0, seconds=40, speedup=1.0)

    airborne = [r for r in reports if flight.is_airborne(r["alt_m"])]
    assert all(r["alt_m"] == 0.0 for r in reports if at(r) <= T0 + 30.5)
    # The first report off the ground: the tick half a second after takeoff.
    assert at(airborne[0]) == T0 + 31
    assert airborne[0]["alt_m"] == pytest.approx(0.5 * flight.CLIMB_MPS)


def test_a_changed_takeoff_at_is_obeyed_while_the_drone_still_waits() -> None:
    drone = sim_drone()
    drone.obey(deliver(takeoff_at=T0 + 100))
    fly(drone, start=T0, seconds=5, speedup=1.0)
    drone.obey(deliver(takeoff_at=T0 + 10))

    reports = fly(drone, start=T0 + 5, seconds=10, speedup=1.0)

    assert flight.is_airborne(reports[-1]["alt_m"])


def test_the_battery_drains_by_the_distance_flown_and_the_payload() -> None:
    drone = sim_drone()
    drone.obey(deliver(payload_kg=5.0))

    reports = fly(drone, start=T0, seconds=5, speedup=1000.0)

    landing = next(r for r in reports if r["alt_m"] == 0.0 and at(r) > T0 + 0.1)

    def pct(km: float, payload_kg: float) -> float:
        per_km = flight.battery_pct_per_km(range_km=30.0, payload_kg=payload_kg, max_payload_kg=5)
        return km * per_km

    empty_km = distance_km(BASE, PICKUP) + distance_km(DROPOFF, BASE)
    expected = 100 - pct(empty_km, 0.0) - pct(distance_km(PICKUP, DROPOFF), 5.0)
    assert landing["battery_pct"] == pytest.approx(expected, abs=0.02)
    # A full payload costs a tenth more per km than none.
    assert pct(1, 5.0) == pytest.approx(pct(1, 0.0) * 1.1)


def test_a_drone_on_the_ground_at_its_base_recharges_two_percent_a_sim_minute() -> None:
    home = sim_drone(battery_pct=50.0)
    away = sim_drone(position=offset(BASE, east_km=1.0), battery_pct=50.0)

    home_reports = fly(home, start=T0, seconds=6, speedup=10.0)  # one sim minute
    away_reports = fly(away, start=T0, seconds=6, speedup=10.0)

    assert home_reports[-1]["battery_pct"] == pytest.approx(52.0)
    assert away_reports[-1]["battery_pct"] == 50.0
    full = sim_drone(battery_pct=99.5)
    assert fly(full, start=T0, seconds=60, speedup=1.0)[-1]["battery_pct"] == 100.0


def test_the_battery_never_goes_below_zero() -> None:
    drone = sim_drone(battery_pct=1.0)
    drone.obey(deliver())

    reports = fly(drone, start=T0, seconds=5, speedup=1000.0)

    assert min(r["battery_pct"] for r in reports) == 0.0


# --- orders -----------------------------------------------------------------------------------


def test_a_mission_that_vanishes_mid_flight_sends_the_drone_home_at_once() -> None:
    drone = sim_drone()
    drone.obey(deliver())
    before = fly(drone, start=T0, seconds=250, speedup=1.0)
    assert [s for s, _ in stages_seen(before)][-1] == "en_route_to_dropoff"
    here = Point(drone.lat, drone.lon)

    home = {"lat": BASE.lat, "lon": BASE.lon}
    drone.obey({"type": "return_to_base", "base": home, "route": [latlon(here), latlon(BASE)]})
    after = fly(drone, start=T0 + 250, seconds=600, speedup=1.0)

    assert after[0]["heading"] == pytest.approx(flight.bearing_deg(here, BASE), abs=0.5)
    distances = [distance_km(where(r)[0], BASE) for r in after]
    assert distances == sorted(distances, reverse=True)
    assert not any(flight.arrived_at(*where(r), DROPOFF) for r in after)
    assert flight.landed_at(*where(after[-1]), BASE)


def test_stand_by_in_the_air_brings_the_drone_home() -> None:
    drone = sim_drone()
    drone.obey(deliver())
    fly(drone, start=T0, seconds=60, speedup=1.0)

    drone.obey({"type": "stand_by"})
    after = fly(drone, start=T0 + 60, seconds=300, speedup=1.0)

    assert not any(flight.arrived_at(*where(r), PICKUP) for r in after)
    assert flight.landed_at(*where(after[-1]), BASE)


def test_stand_by_on_the_ground_cancels_a_mission_that_waits_for_its_takeoff() -> None:
    drone = sim_drone()
    drone.obey(deliver(takeoff_at=T0 + 5))
    drone.obey({"type": "stand_by"})

    reports = fly(drone, start=T0, seconds=30, speedup=1.0)

    assert all(r["alt_m"] == 0.0 for r in reports)


def test_a_restarted_simulator_resumes_with_the_package_aboard() -> None:
    # Between the pickup and the dropoff at the cruise altitude, as the database last saw it.
    midway = flight.interpolate(PICKUP, DROPOFF, 0.5)
    drone = sim_drone(position=midway, alt_m=flight.CRUISE_ALT_M, battery_pct=80.0)
    drone.obey(deliver(stage="en_route_to_dropoff", payload_kg=5.0))

    reports = fly(drone, start=T0, seconds=600, speedup=1.0)

    stages = [s for s, _ in stages_seen(reports, status="en_route_to_dropoff")]
    assert stages == ["at_dropoff", "delivered", "landed"]
    assert not any(distance_km(where(r)[0], PICKUP) < 0.5 for r in reports)


def test_a_repeated_or_progressed_order_does_not_restart_the_mission() -> None:
    drone = sim_drone()
    drone.obey(deliver())
    reports = fly(drone, start=T0, seconds=150, speedup=1.0)
    arrived = dict(stages_seen(reports))["at_pickup"]

    # The server repeats the order with the stage it saw and a route from the last position.
    drone.obey(deliver(stage="at_pickup", start=Point(drone.lat, drone.lon)))
    drone.obey(deliver(stage="at_pickup", start=Point(drone.lat, drone.lon)))
    later = fly(drone, start=T0 + 150, seconds=60, speedup=1.0)

    left = dict(stages_seen(later, status="at_pickup"))["en_route_to_dropoff"]
    climb = (LEAVING_ALT_M - flight.HANDLING_ALT_M) / flight.CLIMB_MPS
    assert left - arrived == pytest.approx(flight.HANDLING_SECONDS + climb, abs=2e-3)


def test_a_drone_landed_at_its_base_reports_every_tick() -> None:
    drone = sim_drone()
    drone.obey({"type": "stand_by"})

    reports = fly(drone, start=T0, seconds=5, speedup=1.0)

    assert [at(r) for r in reports] == [T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + 5]
    assert all(r["alt_m"] == 0.0 and r["ground_speed_mps"] == 0.0 for r in reports)


# --- through the API --------------------------------------------------------------------------


def test_an_unreachable_api_is_retried_while_the_drones_fly_on(tmp_path: Path) -> None:
    heartbeat = tmp_path / "heartbeat"
    simulator = Simulator(
        HttpTransport(f"http://127.0.0.1:{free_port()}"),
        speedup=1000.0,
        heartbeat_file=heartbeat,
        load_fleet=None,
    )
    drone = simulator.drones["FD-0001"] = sim_drone()
    drone.obey(deliver())

    assert not simulator.tick(T0)
    assert not simulator.tick(T0 + 1)

    assert simulator.counters.errors == 2
    assert flight.landed_at(Point(drone.lat, drone.lon), drone.alt, BASE)  # flew on
    assert not heartbeat.exists()
    # The stage boundaries (the climbs away from the base and the stops, the arrivals, the
    # landing) wait to be sent when the API answers again.
    assert len(drone.unsent) == 6


@pytest.mark.django_db
def test_the_fleet_is_read_from_the_database_and_followed() -> None:
    drones = make_fleet(3)
    simulator = Simulator(HttpTransport(f"http://127.0.0.1:{free_port()}"))
    simulator.refresh_fleet()
    assert sorted(simulator.drones) == sorted(d.serial for d in drones)
    first = simulator.drones[drones[0].serial]
    assert (first.speed_kmh, first.range_km, first.max_payload_kg) == (60.0, 30.0, 5.0)

    (added,) = make_fleet(1)
    Drone.objects.filter(pk=drones[0].pk).delete()
    simulator.refresh_fleet()

    assert sorted(simulator.drones) == sorted([drones[1].serial, drones[2].serial, added.serial])


def simulator_through(url: str, tmp_path: Path, *, speedup: float, batch: int = 250) -> Simulator:
    return Simulator(
        HttpTransport(url),
        speedup=speedup,
        batch=batch,
        heartbeat_file=tmp_path / "heartbeat",
        make_key=gateway_key_create,
    )


@pytest.mark.django_db(transaction=True)
def test_the_fleet_reports_in_batches_with_a_gateway_key_of_its_own(
    live_server: Any, tmp_path: Path
) -> None:
    make_fleet(5)
    simulator = simulator_through(live_server.url, tmp_path, speedup=1.0, batch=2)
    simulator.refresh_fleet()

    assert simulator.tick()

    counters = simulator.counters
    assert (counters.requests, counters.accepted, counters.refused) == (3, 5, 0)
    assert all(d.command == {"type": "stand_by"} for d in simulator.drones.values())
    assert (tmp_path / "heartbeat").exists()


@pytest.mark.django_db(transaction=True)
def test_a_delivery_is_flown_through_the_telemetry_api_until_delivered(
    live_server: Any, tenant: Tenant, tmp_path: Path, settings: Any
) -> None:
    from deliveries import services
    from deliveries.models import Delivery, DeliveryEvent

    settings.FLEET_SIM_SPEEDUP = 300.0
    (drone,) = make_fleet(1)
    delivery = services.delivery_create(
        business_id=tenant.business.id,
        request=services.DeliveryRequest(
            pickup=services.Place(PICKUP),
            dropoff=services.Place(offset(PICKUP, east_km=1.0)),
            package_size="small",
            package_weight_kg=2.0,
        ),
    )
    assert services.delivery_assign(delivery_id=delivery.id).result == "assigned"
    simulator = simulator_through(live_server.url, tmp_path, speedup=300.0)
    simulator.refresh_fleet()

    def landed() -> bool:
        assert simulator.tick()
        delivery.refresh_from_db()
        drone.refresh_from_db()
        home = drone.state in (Drone.State.IDLE, Drone.State.CHARGING)
        return delivery.status == Delivery.Status.DELIVERED and home

    wait_for(landed, timeout=30, what="the delivery flown and the drone home")
    statuses = list(
        DeliveryEvent.objects.filter(delivery=delivery)
        .order_by("at")
        .values_list("status", flat=True)
    )
    assert statuses == [
        "requested", "assigned", "en_route_to_pickup", "at_pickup", "en_route_to_dropoff",
        "at_dropoff", "delivered",
    ]  # fmt: skip
    # Home on the ground, as the server reads it: its last report may be the last step of the
    # descent (0.3 m on a slow machine), under the height that counts as airborne.
    assert (drone.lat, drone.lon) == (BASE.lat, BASE.lon)
    assert not flight.is_airborne(drone.alt_m), drone.alt_m


@pytest.mark.django_db(transaction=True)
def test_simulate_fleet_stops_within_a_second_of_sigterm(
    process_env: dict[str, str], tmp_path: Path
) -> None:
    make_fleet(2)
    heartbeat = tmp_path / "heartbeat"
    env = {**process_env, "DATABASE_URL": database_url()}
    log = tmp_path / "simulator.log"
    command = [
        PYTHON, "manage.py", "simulate_fleet", "--key", "none.given",
        "--url", f"http://127.0.0.1:{free_port()}", "--heartbeat-file", str(heartbeat),
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        # Up, flying its two drones, and saying that the API cannot be reached.
        wait_for(lambda: "retrying" in log.read_text(), timeout=30, what="the simulator runs")
        started = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=5) == 0
        # Within a second on a quiet machine; the bound leaves room for a loaded CI machine's
        # scheduling and stays far inside Kubernetes' 30 s grace period.
        assert time.monotonic() - started < 2.0
    finally:
        stop_process_group(process)
    assert "fleet simulator: stopped" in log.read_text()
    assert not heartbeat.exists()  # the API never answered


@pytest.mark.django_db(transaction=True)
def test_simulate_fleet_reports_with_a_key_of_its_own_and_revokes_it_when_stopped(
    live_server: Any, process_env: dict[str, str], tmp_path: Path
) -> None:
    from drones.models import TelemetryKey

    make_fleet(2)
    heartbeat = tmp_path / "heartbeat"
    env = {
        **process_env,
        "DATABASE_URL": database_url(),
        "FLEET_SIM_API_URL": live_server.url,
        "SIMULATOR_HEARTBEAT_FILE": str(heartbeat),
    }
    env.pop("TELEMETRY_KEY", None)
    with (tmp_path / "simulator.log").open("ab") as out:
        process = subprocess.Popen(
            [PYTHON, "manage.py", "simulate_fleet"], cwd=BASE_DIR, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(heartbeat.exists, timeout=30, what="the API answered the simulator")
        (key,) = TelemetryKey.objects.all()
        assert key.name == "fleet simulator" and not key.revoked
        assert Drone.objects.filter(last_report_at__isnull=False).count() == 2
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        stop_process_group(process)
    key.refresh_from_db()
    assert key.revoked
