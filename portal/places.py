"""Known places of the service area, so that a customer can schedule a pickup without the map
(no JavaScript, or no map tiles): picked from a list, or found by a few letters of their name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnownPlace:
    slug: str
    name: str
    lat: float
    lon: float


KNOWN_PLACES: tuple[KnownPlace, ...] = (
    KnownPlace("pike-place-market", "Pike Place Market", 47.6097, -122.3422),
    KnownPlace("space-needle", "Space Needle", 47.6205, -122.3493),
    KnownPlace("seattle-central-library", "Seattle Central Library", 47.6067, -122.3325),
    KnownPlace("pioneer-square", "Pioneer Square", 47.6015, -122.3343),
    KnownPlace("capitol-hill", "Capitol Hill (Broadway)", 47.6235, -122.3208),
    KnownPlace("south-lake-union", "South Lake Union Park", 47.6270, -122.3375),
    KnownPlace("volunteer-park", "Volunteer Park", 47.6302, -122.3150),
    KnownPlace("international-district", "Chinatown-International District", 47.5984, -122.3247),
    KnownPlace("seattle-university", "Seattle University", 47.6101, -122.3172),
    KnownPlace("queen-anne", "Queen Anne (Kerry Park)", 47.6295, -122.3600),
    KnownPlace("fremont", "Fremont Troll", 47.6510, -122.3473),
    KnownPlace("gas-works-park", "Gas Works Park", 47.6456, -122.3344),
    KnownPlace("harbor-island", "Harbor Island", 47.5730, -122.3475),
    KnownPlace("beacon-hill", "Beacon Hill (Jefferson Park)", 47.5697, -122.3100),
)

_BY_SLUG = {place.slug: place for place in KNOWN_PLACES}


def known_place(slug: str) -> KnownPlace | None:
    return _BY_SLUG.get(slug)


def known_places_matching(text: str) -> list[KnownPlace]:
    """Known places whose name holds every word typed, in any order, case aside."""
    words = text.lower().split()
    return [p for p in KNOWN_PLACES if all(word in p.name.lower() for word in words)]
