"""Stage emails: the worker's and the database's CPU per email, sent one per task or in
batches, on the same worker in one run.

    .venv/bin/python bench/notifications.py [--emails 300] [--pairs 2] [--batch 3]

Not part of `make bench`: it measures one choice (notifications.services.notifications_send
takes the emails of a change together) against the way before it, one email per task, which
the worker still runs for messages published by an older version (`workers.notification_send`).

Everything in one run on this machine, stopped at the end: its own Redis (the broker) and
MongoDB-protocol server, the database of DATABASE_URL (PostgreSQL) or a throwaway SQLite file,
one Celery worker (the Procfile's command line) with the locmem email backend, as every bench.
2 x pairs x emails deliveries are assigned in this process while no worker runs (each records
one email to its recipient); then, in pairs of rounds ordered ABBA, `--emails` of those emails
are published as one task each (A) or as tasks of `--batch` (B, the size of a round of
assignments under load), and the round lasts until the database says all were sent. CPU per
email is the worker's process tree and the database's server processes over the round.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import cpu
from bench.run import (
    CENTER,
    FLEET_RADIUS_KM,
    WORK_DIR,
    Made,
    api_clients,
    bench_environ,
    cleanup,
    delivery_bodies,
    django_for_bench,
    grouper,
    machine_load,
    process,
    procfile_command,
    vacuum_as_autovacuum_would,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=300, help="emails per round")
    parser.add_argument("--pairs", type=int, default=2, help="pairs of rounds (ABBA)")
    parser.add_argument("--batch", type=int, default=3, help="emails per task in B")
    args = parser.parse_args()
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    log = WORK_DIR / "notifications-worker.log"
    log.unlink(missing_ok=True)
    env = bench_environ(dict(os.environ))
    rounds = ["one", "batch", "batch", "one"] * (args.pairs // 2) + ["one", "batch"] * (
        args.pairs % 2
    )
    with django_for_bench(env) as (urls, vendor):
        from django.db import connection

        from deliveries.api import DeliveryIn, delivery_request_from
        from deliveries.services import delivery_assign, delivery_create
        from drones.geo import Point
        from drones.services import fleet_seed
        from notifications.models import Notification
        from portal.celery import app

        count = len(rounds) * args.emails
        made = Made([], [], [])
        try:
            # Each under the limit of deliveries under way per business.
            businesses = [b for b, _ in api_clients(count // 90 + 1, "Bench notifications")]
            made.business_ids += [b.pk for b in businesses]
            fleet = fleet_seed(
                count=count + 100, center=Point(*CENTER), radius_km=FLEET_RADIUS_KM, seed=11
            )
            made.drone_ids += fleet.drone_ids
            made.base_ids += [b.id for b in fleet.bases]
            began = time.perf_counter()
            for number, body in enumerate(delivery_bodies(count, seed=11)):
                serializer = DeliveryIn(data=body)
                serializer.is_valid(raise_exception=True)
                request = delivery_request_from(serializer.validated_data)
                business = businesses[number // 90]
                delivery = delivery_create(business_id=business.pk, request=request)
                delivery_assign(delivery_id=delivery.id)
            app.control.purge()  # what the assignments published: this bench publishes its own
            ids = list(
                Notification.objects.filter(
                    delivery__business_id__in=made.business_ids,
                    status=Notification.Status.PENDING,
                )
                .order_by("created_at")
                .values_list("id", flat=True)
            )
            print(
                f"{len(ids)} emails recorded by {count} assignments in "
                f"{time.perf_counter() - began:.0f} s",
                flush=True,
            )
            if len(ids) < count:
                raise SystemExit(f"only {len(ids)} of {count} emails recorded")
            vacuum_as_autovacuum_would()
            with process(procfile_command("worker"), env=env, log=log) as worker:
                deadline = time.monotonic() + 60
                while not app.control.ping(timeout=1.0):
                    if time.monotonic() > deadline:
                        raise SystemExit("the worker did not answer in 60 s")
                group = grouper(urls, worker=worker.pid)
                spent: dict[str, dict[str, float]] = {"one": {}, "batch": {}}
                for number, kind in enumerate(rounds):
                    chunk = ids[number * args.emails : (number + 1) * args.emails]
                    before = cpu.snapshot()
                    if kind == "one":
                        for i in chunk:
                            app.send_task("workers.notification_send", [str(i)])
                    else:
                        for at in range(0, len(chunk), args.batch):
                            batch = [str(i) for i in chunk[at : at + args.batch]]
                            app.send_task("workers.notifications_send", [batch])
                    sent = Notification.objects.filter(
                        pk__in=chunk, status=Notification.Status.SENT
                    )
                    deadline = time.monotonic() + 120
                    while sent.count() < len(chunk):
                        if time.monotonic() > deadline:
                            raise SystemExit(f"round {number + 1}: not all sent in 120 s")
                        time.sleep(0.2)
                    after = cpu.snapshot()
                    used = cpu.usage(before, after, group)
                    cpu.add(spent[kind], used)
                    wall = after.at - before.at
                    print(
                        f"   round {number + 1} ({'one per task' if kind == 'one' else 'batches'}, "
                        f"{machine_load()}): {len(chunk)} emails in {wall:.1f} s; "
                        + cpu.describe(used, wall=wall, per=len(chunk), unit="email"),
                        flush=True,
                    )
        finally:
            if connection.vendor != "sqlite":
                cleanup(made)
            connection.close()
    per = args.emails * len(rounds) / 2
    print(f"\n== CPU ms per email ({vendor}, {len(rounds)} rounds of {args.emails}, ABBA)")
    for name in ("worker", "postgresql"):
        one = 1000 * spent["one"].get(name, 0.0) / per
        batch = 1000 * spent["batch"].get(name, 0.0) / per
        print(
            f"   {name:<10} one per task {one:.2f}, in batches of {args.batch} {batch:.2f} "
            f"({batch - one:+.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
