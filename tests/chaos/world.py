"""The chaos run's database, seen from a process of its own (the test's process has its own test
database and keeps out of the run's):

    python -m tests.chaos.world prepare   migrate, a business and its API key, a fleet, a webhook
                                          endpoint (CHAOS_WEBHOOK_URL); prints them as JSON
    python -m tests.chaos.world collect   every delivery, event, email and webhook message of
                                          the run, as JSON
    python -m tests.chaos.world wait S    the same, once every delivery is finished and every
                                          email and webhook is sent or given up (at most S s)

DATABASE_URL names the run's database (directly, not through its proxy).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

CENTER = (47.6062, -122.3321)
FINISHED = ("delivered", "cancelled", "failed")
EVENTS = ["delivery.assigned", "delivery.picked_up", "delivery.delivered", "delivery.failed"]


def prepare() -> dict[str, Any]:
    from django.core.management import call_command

    from businesses.services import business_create
    from drones.geo import Point
    from drones.services import fleet_seed
    from webhooks.services import webhook_endpoint_create

    call_command("migrate", verbosity=0, interactive=False)
    business, key = business_create(name="Chaos Couriers", email="ops@chaos.example")
    fleet = fleet_seed(
        count=int(os.environ.get("CHAOS_DRONES", "30")),
        center=Point(*CENTER),
        radius_km=1.0,
        seed=13,
    )
    endpoint = webhook_endpoint_create(
        business_id=business.pk, url=os.environ["CHAOS_WEBHOOK_URL"], events=EVENTS
    )
    return {
        "key": key,
        "business_id": str(business.pk),
        "drones": len(fleet.drone_ids),
        "webhook_secret": endpoint.secret,
    }


def collect() -> dict[str, Any]:
    from deliveries.models import Delivery, DeliveryEvent, OutboxMessage
    from notifications.models import Notification
    from webhooks.models import WebhookMessage

    deliveries = [
        {**row, "id": str(row["id"])}
        for row in Delivery.objects.values(
            "id", "status", "recipient_name", "failure_reason", "attention", "attempts"
        )
    ]
    events = [
        {**row, "delivery_id": str(row["delivery_id"]), "at": row["at"].isoformat()}
        for row in DeliveryEvent.objects.order_by("id").values(
            "id", "delivery_id", "status", "at", "note"
        )
    ]
    notifications = [
        {**row, "delivery_id": str(row["delivery_id"])}
        for row in Notification.objects.values("delivery_id", "kind", "email", "status")
    ]
    webhooks = [
        {**row, "delivery_id": str(row["delivery_id"])}
        for row in WebhookMessage.objects.values("id", "delivery_id", "type", "status")
    ]
    return {
        "deliveries": deliveries,
        "events": events,
        "notifications": notifications,
        "webhooks": webhooks,
        "outbox_unpublished": OutboxMessage.objects.filter(published_at__isnull=True).count(),
    }


def settled(world: dict[str, Any]) -> list[str]:
    """What is still under way: unfinished deliveries, unsent emails and webhooks."""
    waiting = []
    running = [d for d in world["deliveries"] if d["status"] not in FINISHED]
    if running:
        some = ", ".join(f"{d['id']} {d['status']} (attempt {d['attempts']})" for d in running[:3])
        waiting.append(f"{len(running)} deliveries not finished ({some})")
    unsent = [n for n in world["notifications"] if n["status"] in ("pending", "sending")]
    if unsent:
        waiting.append(f"{len(unsent)} emails not sent")
    pending = [w for w in world["webhooks"] if w["status"] == "pending"]
    if pending:
        waiting.append(f"{len(pending)} webhooks not sent")
    return waiting


def wait(timeout: float) -> dict[str, Any]:
    from django.db import connection

    deadline = time.monotonic() + timeout
    while True:
        world = collect()
        waiting = settled(world)
        if not waiting or time.monotonic() > deadline:
            return {**world, "waiting": waiting}
        print("waiting: " + ", ".join(waiting), file=sys.stderr, flush=True)
        connection.close()
        time.sleep(2)


def main(argv: list[str]) -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    django.setup()
    if argv[1] == "wait":
        result = wait(float(argv[2]))
    else:
        result = {"prepare": prepare, "collect": collect}[argv[1]]()
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main(sys.argv)
