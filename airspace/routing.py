"""Routes that keep a safety margin from every active no-fly zone.

`Airspace` indexes the zones once (their WGS84 outlines in an STRtree) and plans many routes.
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
"""

from __future__ import annotations

import functools
import heapq
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
# Fewer metres than any degree of latitude, or of longitude at the equator, spans.
_M_PER_DEG = 110_000.0

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


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

    @classmethod
    def build(cls, members: frozenset[int], buffers: Any, raws: Any) -> _Obstacle:
        shape = shapely.union_all(buffers)
        solid = shapely.buffer(shape, -EPS_M, join_style="mitre")
        shapely.prepare(solid)
        xy, prev, nxt = _convex_vertices(shape)
        return cls(members, shape, solid, shapely.union_all(raws), xy, prev, nxt)


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
class _Area:
    """The zones seen from one projection cell, projected and buffered as routes need them."""

    transformer: Transformer
    raw: NDArray[np.object_]
    buffered: NDArray[np.object_]
    done: NDArray[np.bool_]
    neighbours: dict[int, IntArray] = field(default_factory=dict)
    obstacles: dict[frozenset[int], _Obstacle] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def forward(self, points: Sequence[Point]) -> FloatArray:
        x, y = self.transformer.transform([p.lon for p in points], [p.lat for p in points])
        return np.column_stack([x, y])

    def inverse(self, xy: FloatArray) -> list[Point]:
        lon, lat = self._to_wgs(xy[:, 0], xy[:, 1])
        return [Point(float(la), float(lo)) for la, lo in zip(lat, lon, strict=True)]

    def to_wgs(self, geometry: BaseGeometry) -> BaseGeometry:
        return shapely.transform(geometry, self._to_wgs, interleaved=False)

    def _to_wgs(self, x: Any, y: Any) -> Any:
        return self.transformer.transform(x, y, direction=TransformDirection.INVERSE)


_ForEnds = tuple[BaseGeometry | None, BaseGeometry | None]


def _solid_for(obstacle: _Obstacle, for_ends: _ForEnds, to_a: bool, to_b: bool) -> BaseGeometry:
    """The obstacle an edge must not meet; an edge to an end within the obstacle's margin must
    only not meet the smaller one made for that end (for both ends, the smaller of the two)."""
    chosen = [g for g, to_end in zip(for_ends, (to_a, to_b), strict=True) if to_end and g]
    return min(chosen, key=shapely.area) if chosen else obstacle.solid


def _path_meets(path: FloatArray, obstacle: _Obstacle, for_ends: _ForEnds) -> bool:
    last = len(path) - 2
    return any(
        shapely.intersects(
            _solid_for(obstacle, for_ends, i == 0, i == last), shapely.LineString(path[i : i + 2])
        )
        for i in range(last + 1)
    )


class _Window:
    """The zones active at any moment of [start, end] (None: unbounded)."""

    def __init__(self, start: datetime | None, end: datetime | None) -> None:
        self.start = -math.inf if start is None else start.timestamp()
        self.end = math.inf if end is None else end.timestamp()


class Airspace:
    """Zones indexed once (WGS84 STRtree; projected and buffered per area as routes come);
    plans many routes. Immutable: its caches only ever hold what its zones determine."""

    def __init__(self, zones: Sequence[Zone], *, margin_m: float = 50.0) -> None:
        self.zones: tuple[Zone, ...] = tuple(zones)
        self.margin_m = float(margin_m)
        # The radius the zones are buffered by for the visibility graph.
        self._radius = (self.margin_m + EPS_M) * CHORD_FACTOR
        self._shapes = np.array([zone_shape(z.geometry) for z in self.zones], dtype=object)
        self._tree = shapely.STRtree(self._shapes)
        self._from = np.array([_stamp(z.valid_from, -math.inf) for z in self.zones])
        self._until = np.array([_stamp(z.valid_until, math.inf) for z in self.zones])
        self._areas: dict[tuple[int, int], _Area] = {}

    # --- public ------------------------------------------------------------------------------

    def zone_at(
        self, point: Point, *, start: datetime | None = None, end: datetime | None = None
    ) -> Zone | None:
        """The zone active at some moment of [start, end] that contains point (or its edge)."""
        found = self._tree.query(shapely.Point(point.lon, point.lat), predicate="intersects")
        found = self._active(found, _Window(start, end))
        return self.zones[int(found.min())] if found.size else None

    def route(
        self, a: Point, b: Point, *, start: datetime | None = None, end: datetime | None = None
    ) -> list[Point]:
        """The shortest polyline a..b keeping margin_m from every zone active at some moment of
        [start, end]: [a, b] when the straight line does. Raises InsideZone when a or b lies
        inside a zone, NoRoute when the zones close a or b off. An endpoint within a zone's
        margin is reached through that margin, no closer to the zone than itself."""
        window = _Window(start, end)
        for point in (a, b):
            zone = self.zone_at(point, start=start, end=end)
            if zone is not None:
                raise InsideZone(zone, point)
        line = shapely.LineString([(a.lon, a.lat), (b.lon, b.lat)])
        near = self._near(line, self.margin_m, window)
        if not near.size:
            return [a, b]
        area = self._area(Point((a.lat + b.lat) / 2, (a.lon + b.lon) / 2))
        self._project(area, near)
        ends = area.forward([a, b])
        hit = near[shapely.dwithin(shapely.LineString(ends), area.raw[near], self.margin_m)]
        if not hit.size:
            return [a, b]
        xy = self._detour(area, ends, hit, window, (a, b))
        return [a, *area.inverse(xy[1:-1]), b]

    # --- the detour --------------------------------------------------------------------------

    def _detour(
        self,
        area: _Area,
        ends: FloatArray,
        hit: IntArray,
        window: _Window,
        stops: tuple[Point, Point],
    ) -> FloatArray:
        graph = _Graph(ends)
        for obstacle in self._obstacles(area, hit, window):
            graph.add(obstacle, self._for_ends(area, obstacle, ends, stops))
        while True:
            path = graph.shortest()
            if path is None:
                raise self._no_route(graph, stops)
            more = self._met_by(area, path, graph, window, stops)
            if not more:
                return path
            for obstacle, for_ends in more:
                graph.add(obstacle, for_ends)

    def _for_ends(
        self, area: _Area, obstacle: _Obstacle, ends: FloatArray, stops: tuple[Point, Point]
    ) -> _ForEnds:
        """For an end within the obstacle's margin, a smaller obstacle that edges to that end
        must not meet, so that the end is reachable; None for an end outside the margin."""
        smaller: list[BaseGeometry | None] = []
        for end, stop in zip(ends, stops, strict=True):
            point = shapely.Point(end)
            if not shapely.intersects(obstacle.solid, point):
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
        graph: _Graph,
        window: _Window,
        stops: tuple[Point, Point],
    ) -> list[tuple[_Obstacle, _ForEnds]]:
        """The obstacles not yet in the graph that the path meets."""
        line = shapely.LineString(path)
        near = self._near(area.to_wgs(line), self._radius, window)
        near = near[~np.isin(near, graph.member_ids())]
        if not near.size:
            return []
        self._project(area, near)
        near = near[shapely.intersects(line, area.buffered[near])]
        met = []
        for obstacle in self._obstacles(area, near, window):
            for_ends = self._for_ends(area, obstacle, graph.ends, stops)
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
        keep = (self._from[indices] <= window.end) & (self._until[indices] > window.start)
        return indices[keep]

    def _near(self, wgs: BaseGeometry, metres: float, window: _Window) -> IntArray:
        """Active zones that may lie within `metres` of a WGS84 geometry (a superset)."""
        if not self.zones:
            return np.empty(0, dtype=np.intp)
        found = self._tree.query(wgs, predicate="dwithin", distance=_degrees(wgs, metres))
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
            near = self._tree.query(
                self._shapes[i],
                predicate="dwithin",
                distance=_degrees(self._shapes[i], 2 * self._radius),
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
            obstacles.append(obstacle)
        return obstacles


def _surrounds(shape: BaseGeometry, point: BaseGeometry) -> bool:
    """Whether the point lies within the outer boundary of one of the shape's polygons."""
    return any(
        shapely.contains(shapely.Polygon(part.exterior), point) for part in shapely.get_parts(shape)
    )


def _stamp(moment: datetime | None, default: float) -> float:
    # (A naive datetime is taken as local time: Django gives aware ones.)
    return default if moment is None else moment.timestamp()


def _degrees(wgs: BaseGeometry, metres: float) -> float:
    """Degrees that span at least `metres` anywhere within that distance of the geometry
    (a degree of longitude shrinks towards the poles)."""
    _, south, _, north = wgs.bounds
    lat = max(abs(south), abs(north)) + metres / _M_PER_DEG + 0.01
    return metres / (_M_PER_DEG * math.cos(math.radians(min(lat, 89.0))))


class _Graph:
    """The visibility graph over the route's two ends and its obstacles' convex vertices."""

    def __init__(self, ends: FloatArray) -> None:
        self.ends = ends
        self.obstacles: list[_Obstacle] = []
        self._for_ends: list[_ForEnds] = []
        self._solids: dict[tuple[bool, bool], BaseGeometry] = {}

    def add(self, obstacle: _Obstacle, for_ends: _ForEnds) -> None:
        self.obstacles.append(obstacle)
        self._for_ends.append(for_ends)
        self._solids.clear()

    def member_ids(self) -> IntArray:
        return np.fromiter((i for o in self.obstacles for i in o.members), dtype=np.intp)

    def _solid(self, to_a: bool, to_b: bool) -> BaseGeometry:
        """What an edge must not meet: every obstacle (a smaller one for an edge to an end
        within its margin), as one prepared geometry."""
        key = (to_a, to_b)
        solid = self._solids.get(key)
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
            if any(f[end] is not None for f in self._for_ends):
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
                order = [1]
                while order[-1] != 0:
                    order.append(int(parent[order[-1]]))
                return xy[order[::-1]]
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


def _tangent(edge: FloatArray, to_prev: FloatArray, to_next: FloatArray, length: FloatArray) -> Any:
    """Whether both neighbours lie on one side of the edge's line (or on it)."""
    s1, s2 = _cross(edge, to_prev), _cross(edge, to_next)
    tolerance = 1e-9 * (length * length + 1.0)
    return ~(((s1 > tolerance) & (s2 < -tolerance)) | ((s1 < -tolerance) & (s2 > tolerance)))
