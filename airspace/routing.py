"""Routes that keep a safety margin from every active no-fly zone.

`Airspace` indexes the zones once (their WGS84 outlines in an STRtree, their boxes on a grid
of cells that finds the zones near a line: `_Grid`) and plans many routes.
Distances are computed in metres, in an azimuthal equidistant projection centred on the
area of the route (one per `AREA_CELL_DEG` cell of the route's midpoint; its Transformer, and
the zones projected and buffered in it, are cached as routes come).

A route is the straight line when that keeps `margin_m` from every active zone. Otherwise it is
the shortest path around the zones buffered by the margin, overlapping buffers merged into one
obstacle (so a drone never squeezes between two zones less than twice the margin apart): an A*
search over a visibility graph of the obstacles' vertices. The graph is built lazily: it starts
with the obstacles the straight line meets, and when the shortest path around those meets
another obstacle, that one is added and the search runs again. The first path that meets no
obstacle is the shortest of all, since every obstacle left out can only make paths longer.

Buffers have few segments per quarter circle (QUAD_SEGS) and a radius enlarged so that their
chords keep the full margin (`chord_factor`); edges are tested against obstacles shrunk by a few
centimetres, so that an edge along an obstacle's boundary counts as clear. A stop within a
zone's margin (but outside the zone) is reached by an edge that may cross that margin only.

Speed-up (`_Graph.shortest_fast`, for detours around up to FAST_MAX_OBSTACLES obstacles, and
around more from the second time the area sees the same ones; the plain search,
`_Graph.shortest`, is kept for larger ones the first time and as `Airspace(..., plain=True)`):
the plain search finds the graph's tangent pairs anew for each route and tests a node's edges
for visibility, one shapely call per node, as A* reaches it. The edges between obstacles'
vertices do not depend on the trip, so each area keeps them (`_Area.pair`: tangent pairs and
visibility against their own obstacles, found once per obstacle and pair); a route only finds
the edges to its two ends (one call per obstacle), tests the kept edges against its other
obstacles where their boxes meet, and runs the same A* in plain Python lists, pushing in the
same order, so it plans the same routes (tests/airspace/test_routing.py compares the two on
random zone fields). Measured in CPU instructions per route (valgrind; no database, so the same
on SQLite and PostgreSQL): among bench/run.py's 500 zones, its 150 first trips cost 2.2 million
against 4.4 before with the caches filled, 4.9 against 5.5 on a new airspace (the kept edges are
found then); bench/airspace.py's longer detours 16.0 against 20.3 million, and 27.9 against
26.6 (5 % more) on a new airspace. On the zones phase's throughput ratio (PostgreSQL, a busy
shared machine) no gain showed beyond the noise: its web processes plan mostly on new airspaces.

What a graph is apart from its two ends (its obstacles' vertices, each vertex's edges once the
edges another obstacle of the graph blocks are taken out) is kept per set of obstacles too
(`_Core`): trips often meet the same obstacles, and a route then only finds its ends' edges and
runs the A*. Among bench/run.py's 500 zones, tight loop, two processes' worth of trips: 0.39-0.40
ms per route warm before, 0.30-0.31 after; 0.54-0.57 ms on new trips before, 0.61 after (the
first time a vertex's edges are gathered, and more for the garbage collector to look at). The
zones phase's ratio (PostgreSQL, the same hour, runs alternated): 0.868 and 0.852 before, 0.907
and 0.907 after. A graph of more obstacles than FAST_MAX_OBSTACLES seen a second time then takes
the fast search too (its plain one cost about 2 ms): warm 0.28 and 0.26 ms per route against
0.31 and 0.31 without, in alternated runs.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import CRS, Transformer
from pyproj.enums import TransformDirection
from shapely.geometry.base import BaseGeometry

from airspace.geometry import zone_shape
from drones.geo import Point

# Projections are centred on cells this many degrees wide (~5 km): well within the tens of km
# where an azimuthal equidistant projection's distances are exact to a millimetre per 50 m.
AREA_CELL_DEG = 0.05
# Segments per quarter circle of a zone's buffer: few, so the visibility graph stays small.
QUAD_SEGS = 3


def chord_factor(quad_segs: int) -> float:
    """How much larger than the distance to keep a buffer's radius must be.

    A buffer's vertices lie on the circle of its radius and its chords inside it. GEOS splits
    a corner's arc into round(angle / step) chords (step: a quarter circle / quad_segs), so
    one chord may span up to 1.5 steps: its middle is radius * cos(0.75 step) from the corner.
    """
    return 1 / math.cos(0.75 * math.pi / (2 * quad_segs))


CHORD_FACTOR = chord_factor(QUAD_SEGS)
# Edges are tested against obstacles shrunk by this much, so that an edge along an obstacle's
# boundary counts as clear (the buffer is enlarged by as much to keep the full margin).
EPS_M = 0.05
# An endpoint within a zone's margin is reached through that margin, keeping at least the
# endpoint's own distance from the zone less this much (and never closer than ENDPOINT_SHARE of it).
ENDPOINT_SLACK_M = 0.5
ENDPOINT_SHARE = 0.9
ENDPOINT_QUAD_SEGS = 16
# Detours around at most this many obstacles take the fast search (see _Graph); around more,
# the plain one, which tests fewer edges (only those of the nodes it reaches).
FAST_MAX_OBSTACLES = 6
# The grid that finds the zones near a line (_Grid): cells of this many degrees (~550 m of
# latitude), and zones over more cells than this are near every line.
GRID_DEG = 0.005
GRID_MAX_CELLS = 400
_GRID_EPS = 1e-9  # degrees (0.1 mm): a line on a cell's edge looks in both cells
# Fewer metres than any degree of latitude, or of longitude at the equator, spans.
_M_PER_DEG = 110_000.0

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
Box = tuple[float, float, float, float]  # min x, min y, max x, max y


@dataclass(frozen=True)
class Zone:
    id: str
    name: str
    geometry: dict[str, Any]  # GeoJSON (already checked by zone_geometry_check)
    valid_from: datetime | None = None
    valid_until: datetime | None = None  # (inactive zones are simply not given)


class NoRoute(Exception):
    """No route keeps clear of the zones; `zones` are those in the way."""

    def __init__(self, message: str, zones: Sequence[Zone]) -> None:
        super().__init__(message)
        self.message = message
        self.zones = list(zones)


class InsideZone(NoRoute):
    """A stop lies inside a zone itself (not just within its margin)."""

    def __init__(self, zone: Zone, point: Point) -> None:
        super().__init__(
            f"the point {point.lat:.6f}, {point.lon:.6f} lies inside the no-fly zone {zone.name!r}",
            [zone],
        )
        self.zone = zone
        self.point = point


@functools.lru_cache(maxsize=512)
def _projection(cell: tuple[int, int]) -> Transformer:
    """WGS84 lon/lat to metres in an azimuthal equidistant projection centred on the cell."""
    lat = (cell[0] + 0.5) * AREA_CELL_DEG
    lon = (cell[1] + 0.5) * AREA_CELL_DEG
    crs = CRS.from_proj4(f"+proj=aeqd +lat_0={lat:.6f} +lon_0={lon:.6f} +datum=WGS84 +units=m")
    return Transformer.from_crs("EPSG:4326", crs, always_xy=True)


@dataclass(frozen=True)
class _Edges:
    """Edges a shortest path may take, from vertices i (of one obstacle) to vertices j (of the
    same or another), with their lengths; out[u]: those from vertex u, as (j, length) by j."""

    i: IntArray
    j: IntArray
    length: FloatArray
    start: FloatArray  # the edges' coordinates
    stop: FloatArray
    count: int  # vertices the edges are from
    both_ways: bool = False  # each edge is also one from j to i (of the same obstacle)

    @functools.cached_property
    def out(self) -> list[list[tuple[int, float]]]:
        tails, heads, lengths = self.i, self.j, self.length
        if self.both_ways:
            tails, heads = np.concatenate([tails, heads]), np.concatenate([heads, tails])
            lengths = np.concatenate([lengths, lengths])
        out: list[list[tuple[int, float]]] = [[] for _ in range(self.count)]
        order = np.lexsort((heads, tails))
        for u, v, d in zip(
            tails[order].tolist(), heads[order].tolist(), lengths[order].tolist(), strict=True
        ):
            out[u].append((v, d))
        return out

    @functools.cached_property
    def lines(self) -> NDArray[np.object_]:
        return np.asarray(shapely.linestrings(np.stack([self.start, self.stop], axis=1)))

    @functools.cached_property
    def low(self) -> FloatArray:
        return np.minimum(self.start, self.stop)

    @functools.cached_property
    def high(self) -> FloatArray:
        return np.maximum(self.start, self.stop)

    def reversed(self, count: int) -> _Edges:
        """The same edges from j to i (j of an obstacle of `count` vertices)."""
        return _Edges(self.j, self.i, self.length, self.stop, self.start, count)


@dataclass(eq=False)
class _Obstacle:
    """Overlapping buffered zones merged, in an area's projection."""

    members: frozenset[int]
    shape: BaseGeometry  # the union of the members' buffers
    solid: BaseGeometry  # the same shrunk by EPS_M: what an edge must not meet
    raw: BaseGeometry  # the union of the members' outlines
    # The vertices a shortest path may bend at (convex ones), each with its ring neighbours.
    xy: FloatArray
    prev: FloatArray
    next: FloatArray
    box: Box  # of shape

    @classmethod
    def build(cls, members: frozenset[int], buffers: Any, raws: Any) -> _Obstacle:
        shape = shapely.union_all(buffers)
        solid = shapely.buffer(shape, -EPS_M, join_style="mitre")
        shapely.prepare(solid)
        xy, prev, nxt = _convex_vertices(shape)
        x0, y0, x1, y1 = shapely.bounds(shape).tolist()
        return cls(members, shape, solid, shapely.union_all(raws), xy, prev, nxt, (x0, y0, x1, y1))

    @functools.cached_property
    def to_prev(self) -> FloatArray:
        return self.prev - self.xy

    @functools.cached_property
    def to_next(self) -> FloatArray:
        return self.next - self.xy


def _convex_vertices(shape: BaseGeometry) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Vertices where the obstacle's interior angle is under 180° (only those can be bends of a
    shortest path), with their neighbours along the ring."""
    oriented = shapely.orient_polygons(shape)  # exteriors counter-clockwise, holes clockwise
    rings = []
    for polygon in shapely.get_parts(oriented):
        rings.append(polygon.exterior)
        rings.extend(polygon.interiors)
    found: list[tuple[FloatArray, FloatArray, FloatArray]] = []
    for ring in rings:
        xy = shapely.get_coordinates(ring)[:-1]
        prev, nxt = np.roll(xy, 1, axis=0), np.roll(xy, -1, axis=0)
        # The interior is on the left of every ring: a left turn is a convex vertex.
        turn = _cross(xy - prev, nxt - xy)
        keep = turn > 1e-9 * np.hypot(*(xy - prev).T) * np.hypot(*(nxt - xy).T)
        found.append((xy[keep], prev[keep], nxt[keep]))
    if not found:
        empty = np.empty((0, 2))
        return empty, empty, empty
    return (
        np.concatenate([f[0] for f in found]),
        np.concatenate([f[1] for f in found]),
        np.concatenate([f[2] for f in found]),
    )


def _cross(u: FloatArray, v: FloatArray) -> FloatArray:
    return np.asarray(u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0], dtype=np.float64)


@dataclass(eq=False)
class _Core:
    """What a visibility graph over some obstacles (in order) is, whatever its two ends: the
    obstacles' vertices, numbered after the ends (0 and 1), and for each vertex the edges to
    the others that a shortest path may take and that no obstacle of the graph blocks, as
    (vertex, length) in increasing order of vertex, found the first time a search reaches it.
    Trips often meet the same obstacles (a shop's deliveries to one neighbourhood): the area
    keeps a core for each set of obstacles it has seen (at most MAX_CORES)."""

    xy: FloatArray  # every node's coordinates, the two ends' left as zeros
    offsets: list[int]  # each obstacle's first vertex
    owner: list[int]  # each node's obstacle (-1: an end)
    out: list[tuple[tuple[int, float], ...] | None]
    blocked: set[tuple[int, int]]  # edges kept between two obstacles that a third blocks
    # For the edges from an end e to each vertex v: on which side of the line v..e each of
    # v's two ring neighbours (at v + t) lies is cross(e - v, t) = e . sides[:, k] - at[k],
    # for k = v (its previous neighbour), then V + v (its next); see _Graph._end_edges.
    sides: FloatArray  # (2, 2V)
    at: FloatArray  # (2V,)


MAX_CORES = 4096


@dataclass(eq=False)
class _Area:
    """The zones seen from one projection cell, projected and buffered as routes need them."""

    transformer: Transformer
    raw: NDArray[np.object_]
    buffered: NDArray[np.object_]
    done: NDArray[np.bool_]
    neighbours: dict[int, IntArray] = field(default_factory=dict)
    obstacles: dict[frozenset[int], _Obstacle] = field(default_factory=dict)
    pairs: dict[tuple[frozenset[int], frozenset[int]], _Edges] = field(default_factory=dict)
    # The graphs' parts that depend on their obstacles alone (_Graph.shortest_fast), by obstacles.
    cores: dict[tuple[frozenset[int], ...], _Core] = field(default_factory=dict)
    # The sets of more than FAST_MAX_OBSTACLES obstacles searched once (_Graph.seen_before).
    seen: set[tuple[frozenset[int], ...]] = field(default_factory=set)
    # Each zone's merged obstacle, when no zone has a time window (the same at any time).
    groups: dict[int, _Obstacle] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pair(self, one: _Obstacle, other: _Obstacle) -> _Edges:
        """The edges from one obstacle's vertices to the other's (or between its own, each
        once, when other is one) that a shortest path may take (both ends where it can bend),
        clear of the two; found once."""
        found = self.pairs.get((one.members, other.members))
        if found is None:
            self.pairs_fill([one, other])
            found = self.pairs[(one.members, other.members)]
        return found

    def pairs_fill(self, obstacles: Sequence[_Obstacle]) -> None:
        """Find the edges between every two of the obstacles not found yet, all in one go."""
        missing = [
            (q, p)
            for p, obstacle in enumerate(obstacles)
            for q in range(p + 1)
            if (obstacles[q].members, obstacle.members) not in self.pairs
        ]
        if not missing:
            return
        xy = np.concatenate([o.xy for o in obstacles])
        first = np.cumsum([0, *(len(o.xy) for o in obstacles)]).tolist()
        step = xy[None, :, :] - xy[:, None, :]  # step[u, v]: from u to v
        length = np.hypot(step[..., 0], step[..., 1])
        to_prev = np.concatenate([o.to_prev for o in obstacles])[:, None, :]
        to_next = np.concatenate([o.to_next for o in obstacles])[:, None, :]
        tangent = _tangent(step, to_prev, to_next, length)
        useful = tangent & tangent.T
        found = []
        for q, p in missing:
            block = useful[first[q] : first[q + 1], first[p] : first[p + 1]]
            i, j = np.nonzero(np.triu(block, 1) if q == p else block)
            found.append((i + first[q], j + first[p]))
        i = np.concatenate([f[0] for f in found])
        j = np.concatenate([f[1] for f in found])
        clear = np.ones(len(i), dtype=bool)
        if len(i):
            lines = shapely.linestrings(np.stack([xy[i], xy[j]], axis=1))
            owner = np.searchsorted(first, i, side="right") - 1
            other = np.searchsorted(first, j, side="right") - 1
            for m, obstacle in enumerate(obstacles):
                tested = (owner == m) | (other == m)
                if tested.any():
                    clear[tested] &= ~shapely.intersects(obstacle.solid, lines[tested])
        start = 0
        for (q, p), (pi, pj) in zip(missing, found, strict=True):
            keep = clear[start : start + len(pi)]
            start += len(pi)
            pi, pj = pi[keep], pj[keep]
            one, other_ = obstacles[q], obstacles[p]
            edges = _Edges(
                pi - first[q], pj - first[p], length[pi, pj], xy[pi], xy[pj], len(one.xy), q == p
            )
            self.pairs[(one.members, other_.members)] = edges
            if q != p:
                self.pairs[(other_.members, one.members)] = edges.reversed(len(other_.xy))

    def forward(self, a: Point, b: Point) -> FloatArray:
        """A route's two ends in metres, a pyproj call each (its array path costs more for
        two points)."""
        transform = self.transformer.transform
        return np.array([transform(a.lon, a.lat), transform(b.lon, b.lat)])

    def to_wgs_xy(self, x: Any, y: Any) -> Any:
        return self.transformer.transform(x, y, direction=TransformDirection.INVERSE)


_ForEnds = tuple[BaseGeometry | None, BaseGeometry | None]


def _solid_for(obstacle: _Obstacle, for_ends: _ForEnds, to_a: bool, to_b: bool) -> BaseGeometry:
    """The obstacle an edge must not meet; an edge to an end within the obstacle's margin must
    only not meet the smaller one made for that end (for both ends, the smaller of the two)."""
    chosen = [g for g, to_end in zip(for_ends, (to_a, to_b), strict=True) if to_end and g]
    return min(chosen, key=shapely.area) if chosen else obstacle.solid


def _path_meets(path: FloatArray, obstacle: _Obstacle, for_ends: _ForEnds) -> bool:
    segments = shapely.linestrings(np.stack([path[:-1], path[1:]], axis=1))
    if for_ends == (None, None):
        return bool(shapely.intersects(obstacle.solid, segments).any())
    last = len(segments) - 1
    return any(
        shapely.intersects(_solid_for(obstacle, for_ends, i == 0, i == last), segment)
        for i, segment in enumerate(segments)
    )


class _Window:
    """The zones active at any moment of [start, end] (None: unbounded)."""

    def __init__(self, start: datetime | None, end: datetime | None) -> None:
        self.start = -math.inf if start is None else start.timestamp()
        self.end = math.inf if end is None else end.timestamp()


class Airspace:
    """Zones indexed once (WGS84 STRtree; projected and buffered per area as routes come);
    plans many routes. Immutable: its caches only ever hold what its zones determine."""

    def __init__(
        self, zones: Sequence[Zone], *, margin_m: float = 50.0, plain: bool = False
    ) -> None:
        self.zones: tuple[Zone, ...] = tuple(zones)
        self.margin_m = float(margin_m)
        self.plain = plain  # the plain search (tests and bench/airspace.py compare the two)
        # The radius the zones are buffered by for the visibility graph.
        self._radius = (self.margin_m + EPS_M) * CHORD_FACTOR
        self._shapes = np.array([zone_shape(z.geometry) for z in self.zones], dtype=object)
        self._tree = shapely.STRtree(self._shapes)
        # Every zone's box together (west, south, east, north): a line far from all of them
        # skips the index (a fleet in a city without zones asks only this).
        self._extent = tuple(shapely.total_bounds(self._shapes).tolist()) if zones else ()
        self._from = np.array([_stamp(z.valid_from, -math.inf) for z in self.zones])
        self._until = np.array([_stamp(z.valid_until, math.inf) for z in self.zones])
        self._windows = bool(np.isfinite(self._from).any() or np.isfinite(self._until).any())
        self._areas: dict[tuple[int, int], _Area] = {}
        self._grid = _Grid(shapely.bounds(self._shapes).tolist(), self._radius)

    # --- public ------------------------------------------------------------------------------

    def zone_at(
        self, point: Point, *, start: datetime | None = None, end: datetime | None = None
    ) -> Zone | None:
        """The zone active at some moment of [start, end] that contains point (or its edge)."""
        found = self._tree.query(shapely.points(point.lon, point.lat), predicate="intersects")
        found = self._active(found, _Window(start, end))
        return self.zones[int(found.min())] if found.size else None

    def route(
        self, a: Point, b: Point, *, start: datetime | None = None, end: datetime | None = None
    ) -> list[Point]:
        """The shortest polyline a..b keeping margin_m from every zone active at some moment of
        [start, end]: [a, b] when the straight line does. Raises InsideZone when a or b lies
        inside a zone, NoRoute when the zones close a or b off. An endpoint within a zone's
        margin is reached through that margin, no closer to the zone than itself."""
        if self._far(a, b, self.margin_m):
            return [a, b]
        window = _Window(start, end)
        lonlat = np.array([[a.lon, a.lat], [b.lon, b.lat]])
        # A zone that holds a stop is near the line too: with none near, none holds a stop.
        near = self._near(lonlat, self.margin_m, window)
        if not near.size:
            return [a, b]
        area = self._area(Point((a.lat + b.lat) / 2, (a.lon + b.lon) / 2))
        self._project(area, near)
        ends = area.forward(a, b)
        hit = near[shapely.dwithin(shapely.linestrings(ends), area.raw[near], self.margin_m)]
        if not hit.size:
            return [a, b]
        # A zone that holds a stop is within the margin of the line: among those hit.
        holds = shapely.intersects(self._shapes[hit], shapely.points(lonlat)[:, None])
        for point, found in zip((a, b), holds, strict=True):
            if found.any():
                raise InsideZone(self.zones[int(hit[found].min())], point)
        bends = self._detour(area, ends, hit, window, (a, b))
        return [a, *(Point(lat, lon) for lon, lat in bends), b]

    # --- the detour --------------------------------------------------------------------------

    def _detour(
        self,
        area: _Area,
        ends: FloatArray,
        hit: IntArray,
        window: _Window,
        stops: tuple[Point, Point],
    ) -> list[tuple[float, float]]:
        """The bends of the shortest path around the zones (lon, lat)."""
        graph = _Graph(area, ends)
        for obstacle in self._obstacles(area, hit, window):
            graph.add(obstacle, self._for_ends(area, obstacle, graph, stops))
        while True:
            fast = not self.plain and (
                len(graph.obstacles) <= FAST_MAX_OBSTACLES or graph.seen_before()
            )
            path = graph.shortest_fast() if fast else graph.shortest()
            if path is None:
                raise self._no_route(graph, stops)
            lon, lat = area.to_wgs_xy(path[:, 0], path[:, 1])
            lonlat = np.column_stack([lon, lat])
            more = self._met_by(area, path, lonlat, graph, window, stops)
            if not more:
                return lonlat[1:-1].tolist()
            for obstacle, for_ends in more:
                graph.add(obstacle, for_ends)

    def _for_ends(
        self, area: _Area, obstacle: _Obstacle, graph: _Graph, stops: tuple[Point, Point]
    ) -> _ForEnds:
        """For an end within the obstacle's margin, a smaller obstacle that edges to that end
        must not meet, so that the end is reachable; None for an end outside the margin."""
        x0, y0, x1, y1 = obstacle.box
        if not any(x0 <= x <= x1 and y0 <= y <= y1 for x, y in graph.ends.tolist()):
            return None, None
        within = shapely.intersects(obstacle.solid, graph.end_points)
        if not within.any():
            return None, None
        smaller: list[BaseGeometry | None] = []
        for point, inside, stop in zip(graph.end_points, within, stops, strict=True):
            if not inside:
                smaller.append(None)
                continue
            distance = shapely.distance(point, obstacle.raw)
            if distance < 0.01:
                # Checked outside in WGS84, the stop is on the zone's edge in the projection.
                members = np.fromiter(obstacle.members, dtype=np.intp)
                nearest = members[np.argmin(shapely.distance(point, area.raw[members]))]
                raise InsideZone(self.zones[int(nearest)], stop)
            keep = min(self.margin_m, max(distance - ENDPOINT_SLACK_M, ENDPOINT_SHARE * distance))
            radius = min(keep * chord_factor(ENDPOINT_QUAD_SEGS), 0.99 * distance)
            shape = shapely.buffer(obstacle.raw, radius, quad_segs=ENDPOINT_QUAD_SEGS)
            shapely.prepare(shape)
            smaller.append(shape)
        return smaller[0], smaller[1]

    def _met_by(
        self,
        area: _Area,
        path: FloatArray,
        lonlat: FloatArray,
        graph: _Graph,
        window: _Window,
        stops: tuple[Point, Point],
    ) -> list[tuple[_Obstacle, _ForEnds]]:
        """The obstacles not yet in the graph that the path (also given in WGS84) meets."""
        near = self._near(lonlat, self._radius, window)
        members = graph.members
        near = near[[i not in members for i in near.tolist()]]
        if not near.size:
            return []
        self._project(area, near)
        line = shapely.linestrings(path)
        near = near[shapely.intersects(line, area.buffered[near])]
        met = []
        for obstacle in self._obstacles(area, near, window):
            for_ends = self._for_ends(area, obstacle, graph, stops)
            if _path_meets(path, obstacle, for_ends):
                met.append((obstacle, for_ends))
        return met

    def _no_route(self, graph: _Graph, stops: tuple[Point, Point]) -> NoRoute:
        """Names the obstacles that close an end off (all those in the graph if none does)."""
        enclosed = (
            (stop, [o for o in graph.obstacles if _surrounds(o.shape, shapely.Point(end))])
            for end, stop in zip(graph.ends, stops, strict=True)
        )
        stop, closing = next(
            ((s, found) for s, found in enclosed if found), (stops[0], graph.obstacles)
        )
        zones = sorted((self.zones[i] for o in closing for i in o.members), key=lambda z: z.name)
        names = ", ".join(repr(z.name) for z in zones[:5])
        if len(zones) > 5:
            names += f" and {len(zones) - 5} more"
        return NoRoute(
            f"no route keeps {self.margin_m:g} m from the no-fly zones {names}: they close off "
            f"the point {stop.lat:.6f}, {stop.lon:.6f}",
            zones,
        )

    # --- zones, areas and obstacles ----------------------------------------------------------

    def _active(self, indices: IntArray, window: _Window) -> IntArray:
        if not self._windows:
            return indices
        keep = (self._from[indices] <= window.end) & (self._until[indices] > window.start)
        return indices[keep]

    def _far(self, a: Point, b: Point, metres: float) -> bool:
        """Whether the line a..b lies more than `metres` outside the box of every zone, in
        plain floats, before any numpy (the drone choice asks it of every base and drone it
        weighs, mostly in cities without a zone)."""
        if not self.zones:
            return True
        return self._beyond_extent(
            min(a.lat, b.lat), max(a.lat, b.lat), min(a.lon, b.lon), max(a.lon, b.lon), metres
        )

    def _beyond_extent(
        self, south: float, north: float, west: float, east: float, metres: float
    ) -> bool:
        """Whether the box south..north, west..east lies more than `metres` outside the box of
        every zone (degrees of longitude: at least as many as of latitude for the same metres)."""
        distance = _degrees(south, north, metres)
        zones_west, zones_south, zones_east, zones_north = self._extent
        return (
            west > zones_east + distance
            or east < zones_west - distance
            or south > zones_north + distance
            or north < zones_south - distance
        )

    def _near(self, lonlat: FloatArray, metres: float, window: _Window) -> IntArray:
        """Active zones that may lie within `metres` of a WGS84 polyline (a superset)."""
        if not self.zones:
            return np.empty(0, dtype=np.intp)
        points = lonlat.tolist()
        lon, lat = [p[0] for p in points], [p[1] for p in points]
        south, north = min(lat), max(lat)
        if self._beyond_extent(south, north, min(lon), max(lon), metres):
            return np.empty(0, dtype=np.intp)
        if metres <= self._grid.metres:
            found = self._grid.along(points)
        else:
            distance = _degrees(south, north, metres)
            found = self._tree.query(
                shapely.linestrings(lonlat), predicate="dwithin", distance=distance
            )
        return self._active(found, window)

    def _area(self, middle: Point) -> _Area:
        cell = (math.floor(middle.lat / AREA_CELL_DEG), math.floor(middle.lon / AREA_CELL_DEG))
        area = self._areas.get(cell)
        if area is None:
            n = len(self.zones)
            area = _Area(
                _projection(cell),
                np.empty(n, dtype=object),
                np.empty(n, dtype=object),
                np.zeros(n, dtype=bool),
            )
            self._areas[cell] = area
        return area

    def _project(self, area: _Area, indices: IntArray) -> None:
        missing = indices[~area.done[indices]]
        if not missing.size:
            return
        with area.lock:
            missing = missing[~area.done[missing]]
            raw = shapely.transform(
                self._shapes[missing], area.transformer.transform, interleaved=False
            )
            area.raw[missing] = raw
            area.buffered[missing] = shapely.buffer(raw, self._radius, quad_segs=QUAD_SEGS)
            area.done[missing] = True

    def _neighbours(self, area: _Area, i: int) -> IntArray:
        """Zones whose buffers overlap zone i's (active or not)."""
        found = area.neighbours.get(i)
        if found is None:
            _, south, _, north = self._shapes[i].bounds
            near = self._tree.query(
                self._shapes[i],
                predicate="dwithin",
                distance=_degrees(south, north, 2 * self._radius),
            )
            near = near[near != i]
            self._project(area, near)
            found = near[shapely.intersects(area.buffered[i], area.buffered[near])]
            area.neighbours[i] = found
        return found

    def _obstacles(self, area: _Area, seeds: IntArray, window: _Window) -> list[_Obstacle]:
        """The merged obstacles (groups of active zones with overlapping buffers) of seeds."""
        seen: set[int] = set()
        obstacles = []
        for seed in seeds.tolist():
            if seed in seen:
                continue
            obstacle = area.groups.get(seed)
            if obstacle is not None:
                seen |= obstacle.members
                obstacles.append(obstacle)
                continue
            members, stack = {seed}, [seed]
            while stack:
                for j in self._active(self._neighbours(area, stack.pop()), window).tolist():
                    if j not in members:
                        members.add(j)
                        stack.append(j)
            seen |= members
            key = frozenset(members)
            obstacle = area.obstacles.get(key)
            if obstacle is None:
                ids = np.fromiter(key, dtype=np.intp)
                obstacle = _Obstacle.build(key, area.buffered[ids], area.raw[ids])
                area.obstacles[key] = obstacle
            if not self._windows:
                area.groups.update(dict.fromkeys(key, obstacle))
            obstacles.append(obstacle)
        return obstacles


class _Grid:
    """The zones near each cell of a GRID_DEG grid over WGS84 (by their boxes grown by `metres`
    on every side), so that the zones a polyline may pass within `metres` of are those of the
    cells it crosses: a few dictionary lookups in plain Python, then the callers' exact tests
    on the few found. A zone over more than GRID_MAX_CELLS cells is near every line.

    The STRtree's "dwithin" computed a GEOS distance for every zone whose box met the line's
    box (69 for an 8 km diagonal trip among bench/run.py's 500 zones), each reading memory the
    CPU no longer holds when a route runs between two requests: with the caches cold, the two
    searches of a detour were about 30 % of it. Measured with this grid, the scalar
    `_Area.forward` and the ends' sides kept per `_Core`, alternated with the code before
    in one process (the same 9,000 routes planned, identical): 11 % less per route with the
    caches cold, 5 % less warm. Thread CPU around each route in the zones phase's gunicorn
    workers, two runs each, alternated: detours 1.02 and 1.11 ms before, 0.77 and 1.16 after
    (the machine's speed swung within the runs); clear lines 0.29 and 0.28 ms before, 0.15
    and 0.20 after. bench/airspace.py's clear lines on a new Airspace, p99: 0.27-0.36 ms, as
    before (0.31-0.36); without the box test in `along` (more zones to project) 4.5-7.1 ms."""

    def __init__(self, bounds: list[list[float]], metres: float) -> None:
        self.metres = metres
        self.cells: dict[tuple[int, int], list[int]] = {}
        self.everywhere: list[int] = []
        self.boxes: list[tuple[float, float, float, float]] = []  # grown by `metres`
        for i, (west, south, east, north) in enumerate(bounds):
            grow = _degrees(south, north, metres)
            box = (west - grow, south - grow, east + grow, north + grow)
            self.boxes.append(box)
            x0, y0, x1, y1 = (_cell(value) for value in box)
            if (x1 - x0 + 1) * (y1 - y0 + 1) > GRID_MAX_CELLS:
                self.everywhere.append(i)
                continue
            for x in range(x0, x1 + 1):
                for y in range(y0, y1 + 1):
                    self.cells.setdefault((x, y), []).append(i)

    def along(self, points: list[list[float]]) -> IntArray:
        """The zones whose grown box the polyline (lon, lat) meets, in order: those registered
        in the cells each segment crosses, each box tested against the segment (its own box
        meets it, and its line leaves the box's corners on both sides, or on it)."""
        found = set(self.everywhere)
        cells, boxes = self.cells, self.boxes
        for (lon0, lat0), (lon1, lat1) in itertools.pairwise(points):
            if lon0 > lon1:
                lon0, lat0, lon1, lat1 = lon1, lat1, lon0, lat0
            first, last = _cell(lon0 - _GRID_EPS), _cell(lon1 + _GRID_EPS)
            sloped = lon1 > lon0
            slope = (lat1 - lat0) / (lon1 - lon0) if sloped else 0.0
            near: set[int] = set()
            for x in range(first, last + 1):
                # The latitudes the segment spans within this column of cells.
                if sloped:
                    west = max(lon0, x * GRID_DEG)
                    east = min(lon1, (x + 1) * GRID_DEG)
                    a, b = lat0 + slope * (west - lon0), lat0 + slope * (east - lon0)
                else:
                    a, b = lat0, lat1
                for y in range(_cell(min(a, b) - _GRID_EPS), _cell(max(a, b) + _GRID_EPS) + 1):
                    near.update(cells.get((x, y), ()))
            near -= found
            south, north = min(lat0, lat1), max(lat0, lat1)
            dx, dy = lon1 - lon0, lat1 - lat0
            base = dy * lon0 - dx * lat0  # side(x, y) = dx y - dy x + base
            for i in near:
                x0, y0, x1, y1 = boxes[i]
                if x0 > lon1 or x1 < lon0 or y0 > north or y1 < south:
                    continue
                ya, yb, xa, xb = dx * y0, dx * y1, -dy * x0, -dy * x1
                least = min(ya, yb) + min(xa, xb) + base
                most = max(ya, yb) + max(xa, xb) + base
                if least <= 0.0 <= most:
                    found.add(i)
        return np.array(sorted(found), dtype=np.intp)


def _cell(degrees: float) -> int:
    return math.floor(degrees / GRID_DEG)


def _surrounds(shape: BaseGeometry, point: BaseGeometry) -> bool:
    """Whether the point lies within the outer boundary of one of the shape's polygons."""
    return any(
        shapely.contains(shapely.Polygon(part.exterior), point) for part in shapely.get_parts(shape)
    )


def _stamp(moment: datetime | None, default: float) -> float:
    # (A naive datetime is taken as local time: Django gives aware ones.)
    return default if moment is None else moment.timestamp()


def _degrees(south: float, north: float, metres: float) -> float:
    """Degrees that span at least `metres` anywhere within that distance of latitudes from
    south to north (a degree of longitude shrinks towards the poles)."""
    lat = max(abs(south), abs(north)) + metres / _M_PER_DEG + 0.01
    return metres / (_M_PER_DEG * math.cos(math.radians(min(lat, 89.0))))


class _Graph:
    """The visibility graph over the route's two ends and its obstacles' convex vertices.

    `shortest` is the plain search: the whole graph's tangent pairs found anew for each route
    and a node's edges tested for visibility when A* expands it. `shortest_fast` finds the
    same path (the same A*, over the same edges, in the same order) from what the area keeps:
    each obstacle's own edges and those between two obstacles are found once (`_Area.pair`),
    and for each set of obstacles, the edges a third one blocks (tested in one call per
    obstacle, against the edges whose bounding box meets it) and each vertex's edges (`_Core`);
    a route only adds the edges to its ends."""

    def __init__(self, area: _Area, ends: FloatArray) -> None:
        self.area = area
        self.ends = ends
        self.end_points = shapely.points(ends)
        self.obstacles: list[_Obstacle] = []
        self.members: set[int] = set()
        self._for_ends: list[_ForEnds] = []
        self._solids: dict[tuple[bool, bool], BaseGeometry] = {}

    def add(self, obstacle: _Obstacle, for_ends: _ForEnds) -> None:
        self.obstacles.append(obstacle)
        self.members |= obstacle.members
        self._for_ends.append(for_ends)
        self._solids.clear()

    def _within_margin(self, end: int) -> bool:
        return any(f[end] is not None for f in self._for_ends)

    # --- the plain search --------------------------------------------------------------------

    def _solid(self, to_a: bool, to_b: bool) -> BaseGeometry:
        """What an edge must not meet: every obstacle (a smaller one for an edge to an end
        within its margin), as one prepared geometry."""
        key = (to_a, to_b)
        solid = self._solids.get(key)
        if solid is None and len(self.obstacles) == 1:
            solid = _solid_for(self.obstacles[0], self._for_ends[0], to_a, to_b)  # prepared
        if solid is None:
            parts = [
                _solid_for(o, f, to_a, to_b)
                for o, f in zip(self.obstacles, self._for_ends, strict=True)
            ]
            solid = shapely.multipolygons(shapely.get_parts(parts))
            shapely.prepare(solid)
            self._solids[key] = solid
        return solid

    def _blocked(self, start: FloatArray, stops: FloatArray, to_a: bool, to_b: bool) -> Any:
        coords = np.empty((len(stops), 2, 2))
        coords[:, 0] = start
        coords[:, 1] = stops
        return shapely.intersects(self._solid(to_a, to_b), shapely.linestrings(coords))

    def shortest(self) -> FloatArray | None:
        """A* from end 0 to end 1; a node's edges are tested for visibility when it is expanded."""
        xy = np.concatenate([self.ends, *(o.xy for o in self.obstacles)])
        prev = np.concatenate([self.ends, *(o.prev for o in self.obstacles)])
        nxt = np.concatenate([self.ends, *(o.next for o in self.obstacles)])
        n = len(xy)
        step = xy[None, :, :] - xy[:, None, :]  # step[u, v]: from u to v
        length = np.hypot(step[..., 0], step[..., 1])
        # A shortest path only bends around a vertex, touching it: both ring neighbours of the
        # vertex lie on one side of the edge, at either end. (The ends have no neighbours.)
        tangent = _tangent(step, (prev - xy)[:, None, :], (nxt - xy)[:, None, :], length)
        useful = tangent & tangent.T
        # An end within an obstacle's margin is reached by an edge into that margin, which
        # needs not touch the vertex it comes from.
        for end in (0, 1):
            if self._within_margin(end):
                useful[end, :] = useful[:, end] = True
        h = length[1]
        best = np.full(n, math.inf)
        best[0] = 0.0
        parent = np.full(n, -1, dtype=np.intp)
        closed = np.zeros(n, dtype=bool)
        heap = [(h[0], 0.0, 0)]
        while heap:
            _, g, u = heapq.heappop(heap)
            if closed[u]:
                continue
            if u == 1:
                return xy[_order(parent.tolist())]
            closed[u] = True
            cost = g + length[u]
            candidates = np.flatnonzero(useful[u] & ~closed & (cost < best))
            if not candidates.size:
                continue
            # The edge to the goal (always first) may cross the goal's margin: tested apart.
            to_goal = int(candidates[0] == 1)
            visible = np.empty(candidates.size, dtype=bool)
            if to_goal:
                visible[0] = not self._blocked(xy[u], xy[1:2], u == 0, True)[0]
            if candidates.size > to_goal:
                rest = candidates[to_goal:]
                visible[to_goal:] = ~self._blocked(xy[u], xy[rest], u == 0, False)
            for v in candidates[visible].tolist():
                best[v] = cost[v]
                parent[v] = u
                heapq.heappush(heap, (cost[v] + h[v], cost[v], v))
        return None

    # --- the fast search ---------------------------------------------------------------------

    def shortest_fast(self) -> FloatArray | None:
        """The path `shortest` finds, from the edges the area keeps (see the class)."""
        core = self._core()
        xy = core.xy.copy()
        xy[:2] = self.ends
        n = len(xy)
        from_a, to_b = self._end_edges(core, xy)
        to_goal = xy - self.ends[1]
        h = np.hypot(to_goal[:, 0], to_goal[:, 1]).tolist()
        best = [math.inf] * n
        best[0] = 0.0
        parent = [-1] * n
        closed = [False] * n
        heap = [(h[0], 0.0, 0)]
        out = core.out
        while heap:
            _, g, u = heapq.heappop(heap)
            if closed[u]:
                continue
            if u == 1:
                return xy[_order(parent)]
            closed[u] = True
            # The neighbours in increasing order, as the plain search pushes them: the goal,
            # then each obstacle's vertices in turn.
            edges: Sequence[tuple[int, float]]
            if u == 0:
                edges = from_a
            else:
                found = out[u]
                edges = self._vertex_edges(core, u) if found is None else found
                goal = to_b[u]
                if goal is not None:
                    edges = ((1, goal), *edges)
            for v, d in edges:
                cost = g + d
                if cost < best[v] and not closed[v]:
                    best[v] = cost
                    parent[v] = u
                    heapq.heappush(heap, (cost + h[v], cost, v))
        return None

    def seen_before(self) -> bool:
        """Whether a graph over these obstacles was searched before in this area: a graph of
        more than FAST_MAX_OBSTACLES obstacles takes the plain search the first time (the fast
        one would first find the edges between every two of them) and the fast one, from the
        core it then makes and keeps, from the second time on."""
        key = tuple(o.members for o in self.obstacles)
        if key in self.area.cores or key in self.area.seen:
            return True
        if len(self.area.seen) >= MAX_CORES:
            self.area.seen.clear()
        self.area.seen.add(key)
        return False

    def _core(self) -> _Core:
        """The area's core for this graph's obstacles, made when it has none."""
        obstacles = self.obstacles
        key = tuple(o.members for o in obstacles)
        core = self.area.cores.get(key)
        if core is not None:
            return core
        xy = np.concatenate([np.zeros((2, 2)), *(o.xy for o in obstacles)])
        offsets = [2]
        owner = [-1, -1]
        for p, obstacle in enumerate(obstacles):
            offsets.append(offsets[-1] + len(obstacle.xy))
            owner += [p] * len(obstacle.xy)
        self.area.pairs_fill(obstacles)
        blocked = self._blocked_between(offsets)
        vertices = xy[2:]
        turn = np.concatenate([*(o.to_prev for o in obstacles), *(o.to_next for o in obstacles)])
        sides = np.stack([turn[:, 1], -turn[:, 0]])
        at = _cross(np.concatenate([vertices, vertices]), turn)
        core = _Core(xy, offsets, owner, [None] * len(xy), blocked, sides, at)
        if len(self.area.cores) >= MAX_CORES:
            self.area.cores.clear()
        self.area.cores[key] = core
        return core

    def _vertex_edges(self, core: _Core, u: int) -> tuple[tuple[int, float], ...]:
        """Vertex u's edges to the other vertices, by vertex (kept in the core: as a tuple of
        tuples of numbers, which the garbage collector stops tracking, so that the cores an
        area keeps do not lengthen every collection)."""
        p = core.owner[u]
        local = u - core.offsets[p]
        edges: list[tuple[int, float]] = []
        own = self.obstacles[p]
        for q, other in enumerate(self.obstacles):
            first = core.offsets[q]
            edges += [(first + v, d) for v, d in self.area.pair(own, other).out[local]]
        if core.blocked:
            edges = [(v, d) for v, d in edges if (u, v) not in core.blocked]
        kept = core.out[u] = tuple(edges)
        return kept

    def _blocked_between(self, offsets: list[int]) -> set[tuple[int, int]]:
        """The edges between obstacles' vertices (each already clear of the obstacles at its
        ends) that another obstacle of the graph blocks, both ways. An edge is tested only
        against the obstacles its box meets, in one call per obstacle."""
        obstacles = self.obstacles
        if len(obstacles) == 2 and not _boxes_meet(obstacles[0].box, obstacles[1].box):
            return set()
        parts: list[tuple[_Edges, int, int]] = []  # edges from obstacle q to obstacle p
        for p, obstacle in enumerate(obstacles):
            for q in range(p + 1):
                edges = self.area.pair(obstacles[q], obstacle)
                if len(edges.i):
                    parts.append((edges, q, p))
        sizes = [len(edges.i) for edges, _, _ in parts]
        low = np.concatenate([edges.low for edges, _, _ in parts])
        high = np.concatenate([edges.high for edges, _, _ in parts])
        boxes = np.array([o.box for o in obstacles])
        meets = (
            (low[:, None, 0] <= boxes[:, 2])
            & (boxes[:, 0] <= high[:, None, 0])
            & (low[:, None, 1] <= boxes[:, 3])
            & (boxes[:, 1] <= high[:, None, 1])
        )
        rows = np.arange(len(low))
        meets[rows, np.repeat([q for _, q, _ in parts], sizes)] = False
        meets[rows, np.repeat([p for _, _, p in parts], sizes)] = False
        against = np.flatnonzero(meets.any(axis=0))
        if not against.size:
            return set()
        lines = np.concatenate([edges.lines for edges, _, _ in parts])
        blocked = np.zeros(len(low), dtype=bool)
        for m in against.tolist():
            tested = meets[:, m]
            blocked[tested] |= shapely.intersects(obstacles[m].solid, lines[tested])
        found = np.flatnonzero(blocked)
        if not found.size:
            return set()
        i = np.concatenate([edges.i + offsets[q] for edges, q, _ in parts])[found]
        j = np.concatenate([edges.j + offsets[p] for edges, _, p in parts])[found]
        pairs = list(zip(i.tolist(), j.tolist(), strict=True))
        return {*pairs, *((v, u) for u, v in pairs)}

    def _end_edges(
        self, core: _Core, xy: FloatArray
    ) -> tuple[list[tuple[int, float]], list[float | None]]:
        """The edges from end 0 (to end 1, then to vertices by index) and the lengths of those
        from a vertex to end 1 (None: no edge) that a shortest path may take and that keep
        clear of every obstacle: to a vertex where the path can bend (any vertex for an end
        within an obstacle's margin), and from end 0 to end 1."""
        ends, vertices = self.ends, xy[2:]
        step = ends[:, None, :] - vertices  # step[end, v]: from vertex v to the end
        length = np.hypot(step[..., 0], step[..., 1])
        # _tangent(step, to_prev, to_next, length), from what the core keeps.
        count = len(vertices)
        cross = ends @ core.sides - core.at
        s1, s2 = cross[:, :count], cross[:, count:]
        tangent = _both_on_one_side(s1, s2, length)
        for which in (0, 1):
            if self._within_margin(which):
                tangent[which] = True
        end, vertex = np.nonzero(tangent)
        # Edge 0 is end 0 to end 1; then the ends to the vertices.
        coords = np.empty((len(end) + 1, 2, 2))
        coords[0] = ends
        coords[1:, 0] = ends[end]
        coords[1:, 1] = vertices[vertex]
        lines = shapely.linestrings(coords)
        blocked = np.zeros(len(lines), dtype=bool)
        for obstacle, for_ends in zip(self.obstacles, self._for_ends, strict=True):
            if for_ends == (None, None):
                blocked |= shapely.intersects(obstacle.solid, lines)
                continue
            to_a = np.concatenate([[True], end == 0])
            to_b = np.concatenate([[True], end == 1])
            for key_a, key_b in ((True, True), (True, False), (False, True)):
                kind = (to_a == key_a) & (to_b == key_b)
                solid = _solid_for(obstacle, for_ends, key_a, key_b)
                blocked[kind] |= shapely.intersects(solid, lines[kind])
        from_a: list[tuple[int, float]] = []
        to_b_length: list[float | None] = [None] * len(xy)
        if not blocked[0]:
            straight = ends[1] - ends[0]
            from_a.append((1, float(np.hypot(straight[0], straight[1]))))
        clear = ~blocked[1:]
        for e, v, d in zip(
            end[clear].tolist(),
            (vertex[clear] + 2).tolist(),
            length[end[clear], vertex[clear]].tolist(),
            strict=True,
        ):
            if e == 0:
                from_a.append((v, d))
            else:
                to_b_length[v] = d
        return from_a, to_b_length


def _boxes_meet(one: Box, other: Box) -> bool:
    return one[0] <= other[2] and other[0] <= one[2] and one[1] <= other[3] and other[1] <= one[3]


def _order(parent: list[int]) -> list[int]:
    """The nodes from end 0 to end 1 along the search's parents."""
    order = [1]
    while order[-1] != 0:
        order.append(parent[order[-1]])
    return order[::-1]


def _tangent(edge: FloatArray, to_prev: FloatArray, to_next: FloatArray, length: FloatArray) -> Any:
    """Whether both neighbours lie on one side of the edge's line (or on it)."""
    return _both_on_one_side(_cross(edge, to_prev), _cross(edge, to_next), length)


def _both_on_one_side(s1: FloatArray, s2: FloatArray, length: FloatArray) -> Any:
    """Whether the two sides (cross products with the edge) agree, or either is on the line
    within a tolerance relative to the edge's length."""
    tolerance = 1e-9 * (length * length + 1.0)
    return ~(((s1 > tolerance) & (s2 < -tolerance)) | ((s1 < -tolerance) & (s2 > tolerance)))
