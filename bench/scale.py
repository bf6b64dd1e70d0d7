"""At scale: listing a business's deliveries, reading one and its status with 1,000,000
deliveries and their events in the database.

    .venv/bin/python bench/scale.py [--deliveries 1000000] [--events 3] [--businesses 4]
                                    [--samples 500] [--workflow-pairs 2] [--keep]

PostgreSQL only (DATABASE_URL names the server): it makes a database of its own beside
DATABASE_URL's (`<name>_scale`), migrates it, seeds it and drops it at the end, with the empty
one the workflow is compared on (--keep leaves both, for EXPLAIN). Its own Redis and
MongoDB-protocol server, production settings (DEBUG off), as bench/run.py gives every bench
(bench_environ, django_for_bench).

Seeding is SQL (`INSERT ... SELECT generate_series`): the deliveries spread evenly over the
businesses, one every 30 s per pair going back about a year (two share each timestamp, so that
pages cross equal times), 90 % delivered and the rest cancelled, failed or under way; each with
--events events (requested, assigned, then its last status). Then VACUUM ANALYZE, as autovacuum
would after a bulk load.

Every figure is a request through Django's test client in this process (middleware, API key
authentication and its rate window in Redis, the view, JSON), no gunicorn: p50 and p99 of
--samples requests, interleaved so that whatever else the machine does weighs on each alike.
Deep pages follow the `next` links from a cursor 200,000 rows (a fifth of the status's rows for
the filtered list) into the business's list. The status is read twice per delivery: first from
the database (no live copy in Redis yet; the read writes one), then from Redis.

Then the workflow at scale (issue 14: ingestion and end to end within 10 % of the empty
database's figures): bench/run.py's ingestion and end-to-end phases, each run a process of its
own (`bench/run.py --skip ...` all other phases, 3 rounds), against this database and against an
empty one made beside it (`<name>_scale_empty`), alternated (empty, scale, scale, empty, ...)
WORKFLOW_PAIRS times each, so that a machine growing faster or slower weighs on both alike.
Ingestion is compared by its ratio to the bare DRF endpoint measured in the same rounds (the
machine's speed cancels out), end to end by deliveries assigned per second, first to last;
each side's median. Those runs post as businesses of their own (the seeded ones hold thousands
of deliveries under way, over the per-business limit), into the same tables and indexes.

Prints `| figure | value | target | verdict |` rows (bench/run.py's sub-bench summary rows):
p99 <= 20 ms for each read, >= WORKFLOW_SHARE of the empty database's figure for the workflow.
A benchmark, not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.run import bench_environ, django_for_bench, machine_load  # noqa: E402

TARGET_MS = 20.0
# The workflow at scale: bench/run.py's phases run against both databases, and the share of the
# empty database's figure to keep.
WORKFLOW_PHASES = ("ingestion", "e2e")
WORKFLOW_ARGS = ("--rounds", "3", "--open-seconds", "3")
WORKFLOW_SHARE = 0.90
# bench/run.py's summary rows read, by what they are called here.
WORKFLOW_FIGURES = {
    "ingestion": "ingestion ratio (real / bare, median of rounds)",
    "post": "POST /api/v1/deliveries peak",
    "e2e": "assigned/s, first to last",
}
RARE = "failed"  # the status filtered on: 2 % of the rows, so an index not led by it reads 50x
# The last status of a seeded delivery by s = (g / businesses) % 100: every business has each.
LAST_STATUS = "CASE WHEN s < 90 THEN 'delivered' WHEN s < 95 THEN 'cancelled' " \
    "WHEN s < 97 THEN 'failed' WHEN s < 98 THEN 'requested' " \
    "WHEN s < 99 THEN 'assigned' ELSE 'en_route_to_dropoff' END"  # fmt: skip


def scale_url(url: str, suffix: str = "_scale") -> str:
    parts = urlsplit(url)
    name = parts.path.lstrip("/") or "postgres"
    return parts._replace(path=f"/{name}{suffix}").geturl()


def recreate(url: str, *, drop_only: bool = False) -> None:
    import psycopg
    from psycopg import sql

    name = urlsplit(url).path.lstrip("/")
    server = urlsplit(url)._replace(path="/postgres").geturl()
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        if not drop_only:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


# --- seeding ----------------------------------------------------------------------------------


def delivery_columns(business_ids: list[str]) -> dict[str, str]:
    """Each column of the deliveries table and the SQL that fills it for row g (1-based);
    a column added later gets NULL, or '' when it is a string that may not be NULL."""
    from django.db import models

    from deliveries.models import Delivery

    array = "ARRAY[" + ", ".join(f"'{b}'::uuid" for b in business_ids) + "]"
    status = LAST_STATUS.replace("s <", f"(g / {len(business_ids)}) % 100 <")
    known = {
        "id": "gen_random_uuid()",
        "business_id": f"({array})[1 + g % {len(business_ids)}]",
        "status": status,
        # A delivery still `requested` was tried and waits for its next try (none is left
        # untried for months): a workflow round, which takes the untried ones oldest first,
        # leaves it to the sweeper, as in production.
        "next_attempt_at": f"CASE WHEN ({status}) = 'requested' THEN now() + interval '1 day' END",
        "version": "3",
        "pickup_lat": "47.60 + (g % 1000) * 0.0001",
        "pickup_lon": "-122.33 - (g % 997) * 0.0001",
        "dropoff_lat": "47.62 + (g % 991) * 0.0001",
        "dropoff_lon": "-122.35 + (g % 983) * 0.0001",
        "package_id": "gen_random_uuid()",
        "package_size": "(ARRAY['small', 'medium', 'large'])[1 + g % 3]",
        "package_weight_kg": "0.5 + (g % 40) * 0.1",
        "expedited": "g % 10 = 0",
        "confirmation_required": "'none'",
        "recipient_name": "'Recipient ' || g",
        "price_amount": "9.90",
        "price_currency": "'USD'",
        "route_version": "1",
        "attempts": "1",
        "tracking_token": "md5(g::text || clock_timestamp()::text) || md5(random()::text)",
        # Two deliveries share each timestamp: pages cross equal times.
        "created_at": "now() - (g / 2) * interval '30 seconds'",
        "updated_at": "now() - (g / 2) * interval '30 seconds' + interval '40 minutes'",
    }
    columns: dict[str, str] = {}
    for field in Delivery._meta.concrete_fields:
        column = str(field.column)
        if column in known:
            columns[column] = known[column]
        elif field.null:
            columns[column] = "NULL"
        elif isinstance(field, models.CharField):
            columns[column] = "''"
        else:
            raise SystemExit(f"bench/scale.py does not know how to seed {column}")
    return columns


def seed(*, count: int, events: int, business_ids: list[str]) -> float:
    from django.db import connection

    columns = delivery_columns(business_ids)
    began = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        names, values = ", ".join(columns), ", ".join(columns.values()).replace("%", "%%")
        table = "deliveries_delivery"
        insert = f"INSERT INTO {table} ({names}) SELECT {values} FROM generate_series(1, %s) g"  # noqa: S608  # nosec B608 # the bench's own SQL
        cursor.execute(insert, [count])
        # requested, assigned, (en route ...,) its status now; SQL expressions of the code's own.
        steps = [*["'requested'", "'assigned'", *["'en_route_to_pickup'"] * events][: events - 1]]
        steps.append("d.status")
        for n, status in enumerate(steps):
            event = f"d.id, {status}, d.created_at + %s * interval '20 minutes'"
            fields = "delivery_id, status, at, lat, lon, alt_m, note"
            values = f"{event}, d.pickup_lat, d.pickup_lon, NULL, ''"
            insert = (
                f"INSERT INTO deliveries_deliveryevent ({fields}) SELECT {values} FROM {table} d"  # noqa: S608  # nosec B608 # the bench's own SQL
            )
            cursor.execute(insert, [n])
        cursor.execute("VACUUM ANALYZE deliveries_delivery")
        cursor.execute("VACUUM ANALYZE deliveries_deliveryevent")
    return time.perf_counter() - began


# --- measuring --------------------------------------------------------------------------------


def percentile(samples: list[float], p: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[p - 1]


def deep_cursor(business_id: str, status: str | None, depth: int) -> str:
    """A cursor as a `next` link carries it, at `depth` rows into the list."""
    from deliveries.models import Delivery
    from portal import keyset

    rows = Delivery.objects.filter(business_id=business_id)
    if status:
        rows = rows.filter(status=status)
    row = rows.order_by("-created_at", "-id").values("created_at", "id")[depth]
    return keyset._encode(keyset.OLDER, row["created_at"], row["id"])


def following(client: Any, path: str, start: str) -> Iterator[str]:
    """Deep pages one after another: each the `next` of the page before (from `start` again
    at the end of the list)."""
    first = f"{path}{'&' if '?' in path else '?'}cursor={start}"
    url = first
    while True:
        yield url
        url = client.get(url).json()["next"] or first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=3)
    parser.add_argument("--businesses", type=int, default=4)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument(
        "--workflow-pairs", type=int, default=2,
        help="runs of ingestion and end to end on each database (0: none)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="leave the databases for EXPLAIN")
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        print("bench/scale.py needs PostgreSQL: DATABASE_URL=postgres://... (skipped)")
        return
    original = dict(os.environ)
    own, empty = scale_url(url), scale_url(url, "_scale_empty")
    recreate(own)
    env = bench_environ({**original, "DATABASE_URL": own})
    try:
        with django_for_bench(env):
            total = run(args)
            from django.db import connection

            connection.close()
            if args.workflow_pairs > 0:
                recreate(empty)
                workflow_at_scale(original, own, empty, total, args.workflow_pairs)
    finally:
        if not args.keep:
            recreate(own, drop_only=True)
            recreate(empty, drop_only=True)


def run(args: argparse.Namespace) -> int:
    """Seed, then time the reads; returns how many deliveries the database holds."""
    import logging
    import warnings

    from django.db import connection
    from django.test import Client

    from businesses.models import Business
    from businesses.services import api_key_create
    from deliveries.models import Delivery, DeliveryEvent

    # The log lines are still formatted and written, as in gunicorn, but not onto this report.
    devnull = open(os.devnull, "w")  # noqa: SIM115 (closed with the process)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(devnull)
    warnings.filterwarnings("ignore", "No directory at")

    businesses = [Business.objects.create(name=f"scale {n}") for n in range(args.businesses)]
    business = businesses[0]
    _, key = api_key_create(business=business, name="scale")
    seconds = seed(
        count=args.deliveries, events=args.events, business_ids=[str(b.pk) for b in businesses]
    )
    total, events = Delivery.objects.count(), DeliveryEvent.objects.count()
    print(
        f"{connection.vendor} {connection.settings_dict['NAME']}: seeded {total:,} deliveries "
        f"and {events:,} events for {len(businesses)} businesses in {seconds:.0f} s "
        f"(SQL INSERT ... SELECT generate_series, then VACUUM ANALYZE); {machine_load()}",
        flush=True,
    )

    client = Client(HTTP_AUTHORIZATION=f"Api-Key {key}", HTTP_HOST="127.0.0.1")
    mine = Delivery.objects.filter(business=business)
    ids = [str(pk) for pk in mine.order_by("?").values_list("pk", flat=True)[: args.samples]]
    depth = min(200_000, mine.count() // 2)
    deep = deep_cursor(str(business.pk), None, depth)
    rare = mine.filter(status=RARE).count()
    deep_rare = deep_cursor(str(business.pk), RARE, rare // 5)
    deep_pages = following(client, "/api/v1/deliveries", deep)
    rare_pages = following(client, f"/api/v1/deliveries?status={RARE}", deep_rare)

    def get(path: str) -> Callable[[], None]:
        def call() -> None:
            response = client.get(path)
            if response.status_code != 200:
                raise SystemExit(
                    f"GET {path} answered {response.status_code}: {response.content!r}"
                )

        return call

    figures: dict[str, Callable[[int], Callable[[], None]]] = {
        "list, first page": lambda i: get("/api/v1/deliveries"),
        f"list, deep pages (from row {depth:,})": lambda i: get(next(deep_pages)),
        f"list ?status={RARE}, first page": lambda i: get(f"/api/v1/deliveries?status={RARE}"),
        f"list ?status={RARE}, deep pages": lambda i: get(next(rare_pages)),
        "read one (GET /deliveries/{id})": lambda i: get(f"/api/v1/deliveries/{ids[i]}"),
        "status from the database": lambda i: get(f"/api/v1/deliveries/{ids[i]}/status"),
        "status from Redis": lambda i: get(f"/api/v1/deliveries/{ids[i]}/status"),
    }
    for i in range(50):  # warm-up: connections, caches, the code's first paths
        get("/api/v1/deliveries")()
        get(f"/api/v1/deliveries?status={RARE}")()
        get(f"/api/v1/deliveries/{ids[-1 - i]}")()
    timings: dict[str, list[float]] = {name: [] for name in figures}
    for i in range(len(ids)):
        for name, request in figures.items():
            call = request(i)
            began = time.perf_counter()
            call()
            timings[name].append((time.perf_counter() - began) * 1000)

    plans = explain(str(business.pk))
    print(f"{len(ids)} requests each, interleaved, page size 50, business with {mine.count():,}")
    for name, plan in plans.items():
        print(f"  plan, {name}: {plan}")
    print("| figure | value | target | verdict |")
    print("| --- | --- | --- | --- |")
    for name, samples in timings.items():
        p50, p99 = percentile(samples, 50), percentile(samples, 99)
        verdict = "PASS" if p99 <= TARGET_MS else "MISS"
        print(
            f"| at scale ({total:,}): {name} | p99 {p99:.1f} ms (p50 {p50:.1f}) "
            f"| <= {TARGET_MS:g} ms | {verdict} |"
        )
    return total


def workflow_run(original: dict[str, str], url: str) -> dict[str, float]:
    """bench/run.py's ingestion and end-to-end phases against the database at `url`, in a
    process of their own (their own Redis and MongoDB-protocol server): their figures by
    WORKFLOW_FIGURES' names."""
    from bench.run import PHASES

    skip = [arg for phase in PHASES if phase not in WORKFLOW_PHASES for arg in ("--skip", phase)]
    command = [sys.executable, str(BASE_DIR / "bench" / "run.py"), *skip, *WORKFLOW_ARGS]
    completed = subprocess.run(
        command,
        cwd=BASE_DIR,
        env={**original, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=600,
    )
    measured: dict[str, str] = {}
    for line in completed.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4:
            measured[cells[0]] = cells[1]
    found: dict[str, float] = {}
    for key, figure in WORKFLOW_FIGURES.items():
        number = re.match(r"[\d.]+", measured.get(figure, ""))
        if completed.returncode != 0 or number is None:
            output = (completed.stdout + completed.stderr).strip().splitlines()[-20:]
            raise SystemExit(
                f"bench/run.py on {urlsplit(url).path} gave no {figure!r} "
                f"(exit {completed.returncode}):\n" + "\n".join(output)
            )
        found[key] = float(number[0])
    return found


def workflow_at_scale(
    original: dict[str, str], scale: str, empty: str, total: int, pairs: int
) -> None:
    """Ingestion and end to end against the seeded database and the empty one, alternated."""
    runs: dict[str, list[dict[str, float]]] = {"empty": [], "scale": []}
    order = [
        side
        for pair in range(pairs)
        for side in (("empty", "scale") if pair % 2 == 0 else ("scale", "empty"))
    ]
    print(
        f"the workflow: bench/run.py {' '.join(WORKFLOW_ARGS)}, ingestion and end to end only, "
        f"against this database and an empty one, alternated ({', '.join(order)})",
        flush=True,
    )
    for side in order:
        figures = workflow_run(original, scale if side == "scale" else empty)
        runs[side].append(figures)
        where = f"{total:,} deliveries" if side == "scale" else "empty database"
        print(
            f"  {where}: ingestion ratio {figures['ingestion']:.2f} (POST {figures['post']:.0f} "
            f"req/s), end to end {figures['e2e']:.0f}/s ({machine_load()})",
            flush=True,
        )
    print("| figure | value | target | verdict |")
    print("| --- | --- | --- | --- |")
    for key, name in (
        ("ingestion", "ingestion ratio to the bare endpoint"),
        ("e2e", "end to end, assigned/s first to last"),
    ):
        at_scale = statistics.median(r[key] for r in runs["scale"])
        at_empty = statistics.median(r[key] for r in runs["empty"])
        share = at_scale / at_empty if at_empty else 0.0
        verdict = "PASS" if share >= WORKFLOW_SHARE else "MISS"
        print(
            f"| at scale ({total:,}): {name}, / empty database | {share:.2f} ({at_scale:g} "
            f"against {at_empty:g}, medians of {pairs} runs each) | >= {WORKFLOW_SHARE:g} "
            f"| {verdict} |"
        )


def explain(business_id: str) -> dict[str, str]:
    """The indexes each list query reads, from PostgreSQL's plan of the query it sends."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from deliveries import selectors
    from portal import keyset

    plans = {}
    for name, status in (("list", None), (f"?status={RARE}", RARE)):
        rows = selectors.delivery_list(business_id=uuid.UUID(business_id), status=status)
        older = keyset.page_of(rows, cursor=None, size=50).older
        for depth, cursor in (("first page", None), ("next page", older)):
            with CaptureQueriesContext(connection) as captured:
                keyset.page_of(rows, cursor=cursor, size=50)
            with connection.cursor() as db:
                db.execute("EXPLAIN " + captured.captured_queries[0]["sql"])
                lines = [line for (line,) in db.fetchall()]
            scans = [line.strip().split("  (")[0] for line in lines if "Index" in line]
            plans[f"{name}, {depth}"] = "; ".join(scans) or lines[0]
    return plans


if __name__ == "__main__":
    main()
