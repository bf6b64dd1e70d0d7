from __future__ import annotations

import math

import pytest

from drones.geo import EARTH_RADIUS_KM, Point, distance_km


def test_a_point_is_no_distance_from_itself() -> None:
    assert distance_km(Point(47.6, -122.3), Point(47.6, -122.3)) == 0.0


def test_one_degree_along_a_meridian_is_111_2_km() -> None:
    assert distance_km(Point(10.0, 5.0), Point(11.0, 5.0)) == pytest.approx(111.195, abs=0.001)


def test_one_degree_along_the_equator_is_111_2_km() -> None:
    assert distance_km(Point(0.0, 179.5), Point(0.0, -179.5)) == pytest.approx(111.195, abs=0.001)


def test_paris_to_london_is_about_343_km() -> None:
    paris, london = Point(48.8566, 2.3522), Point(51.5074, -0.1278)
    assert distance_km(paris, london) == pytest.approx(343.56, abs=0.2)
    assert distance_km(london, paris) == distance_km(paris, london)


def test_antipodes_are_half_the_circumference_apart() -> None:
    assert distance_km(Point(0.0, 0.0), Point(0.0, 180.0)) == pytest.approx(
        math.pi * EARTH_RADIUS_KM
    )
    assert distance_km(Point(90.0, 0.0), Point(-90.0, 0.0)) == pytest.approx(
        math.pi * EARTH_RADIUS_KM
    )
