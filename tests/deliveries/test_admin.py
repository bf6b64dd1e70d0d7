"""Operators' deliveries in Django admin: finding them, their timeline, cancel, retry and deadline,
failed work in one place, and nothing that leaves a drone booked for ever."""

from __future__ import annotations

import zoneinfo
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from deliveries import services
from deliveries.models import Delivery, DeliveryEvent
from drones.geo import Point
from drones.models import Drone
from tests.conftest import Tenant, make_fleet

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:deliveries_delivery_changelist"


def on_site(moment: datetime) -> datetime:
    """The time as admin shows it and reads it: in the service area's zone."""
    return moment.astimezone(zoneinfo.ZoneInfo(settings.SITE_TIME_ZONE))


def request(**overrides: Any) -> services.DeliveryRequest:
    fields: dict[str, Any] = {
        "pickup": services.Place(Point(lat=47.6097, lon=-122.3422), "Pike Place Market"),
        "dropoff": services.Place(Point(lat=47.6205, lon=-122.3493), "Space Needle"),
        "package_size": "small",
        "package_weight_kg": 2.0,
    }
    fields.update(overrides)
    return services.DeliveryRequest(**fields)


def a_delivery(tenant: Tenant, **overrides: Any) -> Delivery:
    return services.delivery_create(business_id=tenant.business.id, request=request(**overrides))


def an_assigned_delivery(tenant: Tenant) -> tuple[Delivery, Drone]:
    delivery = a_delivery(tenant)
    outcome = services.delivery_assign(delivery_id=delivery.id)
    assert outcome.result == "assigned"
    delivery.refresh_from_db()
    assert delivery.drone is not None
    return delivery, delivery.drone


def shown(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def act(client: Client, action: str, *deliveries: Delivery) -> list[str]:
    response = client.post(
        reverse(CHANGELIST),
        {"action": action, "_selected_action": [str(d.pk) for d in deliveries]},
        follow=True,
    )
    assert response.status_code == 200
    return shown(response)


def change_form(delivery: Delivery, **fields: Any) -> dict[str, Any]:
    """What the change page posts: its fields and the (read-only) timeline's management form."""
    events = list(DeliveryEvent.objects.filter(delivery=delivery).order_by("at", "id"))
    data: dict[str, Any] = {
        "events-TOTAL_FORMS": len(events),
        "events-INITIAL_FORMS": len(events),
        "events-MIN_NUM_FORMS": 0,
        "events-MAX_NUM_FORMS": 1000,
    }
    for i, event in enumerate(events):
        data[f"events-{i}-id"] = event.pk
        data[f"events-{i}-delivery"] = str(delivery.pk)
    data.update(fields)
    return data


def test_operators_filter_deliveries_by_stage_business_and_date(
    admin_client: Client, tenant: Tenant, other_tenant: Tenant
) -> None:
    make_fleet(1)
    failed = a_delivery(tenant)
    services.delivery_fail(delivery_id=failed.id, reason="no drone became free in time")
    waiting = a_delivery(tenant)
    elsewhere = a_delivery(other_tenant)
    old = a_delivery(tenant)
    Delivery.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=400))
    url = reverse(CHANGELIST)

    by_stage = admin_client.get(url, {"status__exact": "failed"}).content.decode()
    assert str(failed.pk) in by_stage and str(waiting.pk) not in by_stage
    assert "no drone became free in time" in by_stage

    by_business = admin_client.get(
        url, {"business__id__exact": str(other_tenant.business.pk)}
    ).content.decode()
    assert str(elsewhere.pk) in by_business and str(waiting.pk) not in by_business

    this_year = admin_client.get(url, {"created_at__year": timezone.now().year}).content.decode()
    assert str(waiting.pk) in this_year and str(old.pk) not in this_year


def test_a_whole_or_partial_id_or_a_tracking_link_finds_the_delivery(
    admin_client: Client, tenant: Tenant
) -> None:
    make_fleet(1)
    wanted, other = a_delivery(tenant), a_delivery(tenant)
    url = reverse(CHANGELIST)
    whole = str(wanted.pk)
    for term in (
        whole,
        whole.upper(),
        whole[9:23],  # the middle, dashes and all
        whole.replace("-", "")[6:18],  # typed without the dashes
        wanted.tracking_token,
        f"http://127.0.0.1:8000/track/{wanted.tracking_token}",
    ):
        body = admin_client.get(url, {"q": term}).content.decode()
        assert whole in body, term
        assert str(other.pk) not in body, term


def test_the_timeline_shows_each_event_in_time_order_with_position_and_note(
    admin_client: Client, tenant: Tenant
) -> None:
    make_fleet(1)
    delivery, drone = an_assigned_delivery(tenant)
    services.delivery_cancel(
        business_id=tenant.business.id, delivery_id=delivery.id, note="cancelled by business"
    )

    body = admin_client.get(
        reverse("admin:deliveries_delivery_change", args=[delivery.pk])
    ).content.decode()

    timeline = body[body.index("Timeline") :]
    order = [timeline.index(status) for status in ("Requested", "Assigned", "Cancelled")]
    assert order == sorted(order)
    assert f"drone {drone.serial}" in timeline
    assert f"{drone.lat:.5f}, {drone.lon:.5f}" in timeline  # where it was when assigned
    assert "cancelled by business" in timeline


def test_cancelling_releases_the_drone_and_records_the_operator(
    admin_client: Client, tenant: Tenant
) -> None:
    make_fleet(2)
    delivery, drone = an_assigned_delivery(tenant)

    assert act(admin_client, "cancel", delivery) == [
        "1 delivery cancelled; its drone, if it had one, is released."
    ]

    delivery.refresh_from_db()
    drone.refresh_from_db()
    assert delivery.status == "cancelled"
    assert drone.assigned_delivery_id is None
    last = DeliveryEvent.objects.filter(delivery=delivery).order_by("at", "id").last()
    assert last is not None and last.note == "cancelled by operator admin"


def test_messages_count_deliveries_in_words_and_say_why_one_was_refused(
    admin_client: Client, tenant: Tenant
) -> None:
    make_fleet(1)
    first, second = a_delivery(tenant), a_delivery(tenant)
    delivered = a_delivery(tenant)
    Delivery.objects.filter(pk=delivered.pk).update(status="delivered")

    messages = act(admin_client, "cancel", first, second, delivered)

    assert "2 deliveries cancelled; their drones, if they had any, are released." in messages
    refusal = next(m for m in messages if str(delivered.pk)[:8] in m)
    assert "not cancelled: the delivery is delivered; it can be cancelled only until" in refusal


def test_a_retry_past_the_deadline_is_refused_with_the_reason(
    admin_client: Client, tenant: Tenant
) -> None:
    make_fleet(1)
    delivery = a_delivery(tenant, deadline=timezone.now() + timedelta(hours=1))
    past = timezone.now() - timedelta(minutes=5)
    Delivery.objects.filter(pk=delivery.pk).update(deadline=past)
    services.delivery_fail(
        delivery_id=delivery.id, reason="no drone can deliver before the deadline"
    )

    messages = act(admin_client, "retry_failed", delivery)

    assert len(messages) == 1
    assert messages[0].startswith(f'Delivery <a href="/admin/deliveries/delivery/{delivery.pk}')
    when = f"{on_site(past):%Y-%m-%d %H:%M %Z}"
    assert f"not retried: the deadline {when} has passed; change it first." in messages[0]
    assert Delivery.objects.get(pk=delivery.pk).status == "failed"


def test_an_operator_moves_the_deadline_and_the_retry_sends_it_back_to_the_workflow(
    admin_client: Client, tenant: Tenant
) -> None:
    make_fleet(1)
    delivery = a_delivery(tenant, deadline=timezone.now() + timedelta(hours=1))
    Delivery.objects.filter(pk=delivery.pk).update(deadline=timezone.now() - timedelta(minutes=5))
    services.delivery_fail(
        delivery_id=delivery.id, reason="no drone can deliver before the deadline"
    )
    page = reverse("admin:deliveries_delivery_change", args=[delivery.pk])
    assert "This delivery failed: no drone can deliver before the deadline." in (
        admin_client.get(page).content.decode()
    )

    too_soon = on_site(timezone.now() - timedelta(hours=1))
    refused = admin_client.post(
        page,
        change_form(
            delivery,
            deadline_0=f"{too_soon:%Y-%m-%d}",
            deadline_1=f"{too_soon:%H:%M:%S}",
        ),
    )
    assert refused.status_code == 200  # the form again, with the reason
    assert "is in the past" in refused.content.decode()

    later = on_site(timezone.now() + timedelta(hours=3))
    saved = admin_client.post(
        page,
        change_form(delivery, deadline_0=f"{later:%Y-%m-%d}", deadline_1=f"{later:%H:%M:%S}"),
    )
    assert saved.status_code == 302
    delivery.refresh_from_db()
    assert delivery.deadline is not None
    assert abs((delivery.deadline - later).total_seconds()) < 1

    retried = admin_client.post(
        reverse("admin:deliveries_delivery_retry", args=[delivery.pk]), follow=True
    )

    assert shown(retried)[-1] == (
        "1 delivery sent back to the workflow: requested again, it gets the first suitable drone "
        "that is free."
    )
    delivery.refresh_from_db()
    assert delivery.status == "requested"
    last = DeliveryEvent.objects.filter(delivery=delivery).order_by("at", "id").last()
    assert last is not None and last.note == "retried by operator admin"


def test_a_retry_that_no_drone_could_ever_make_is_refused(
    admin_client: Client, tenant: Tenant
) -> None:
    (drone,) = make_fleet(1)
    delivery = a_delivery(tenant)
    services.delivery_fail(delivery_id=delivery.id, reason="no drone became free in time")
    Drone.objects.filter(pk=drone.pk).delete()  # the fleet was sold meanwhile

    (message,) = act(admin_client, "retry_failed", delivery)

    assert "not retried: There are no drones in the fleet" in message
    assert message.endswith("; it would fail again.")


def test_failed_deliveries_have_their_own_line_in_the_admin(
    admin_client: Client, tenant: Tenant
) -> None:
    index = admin_client.get(reverse("admin:index")).content.decode()

    assert "Failed deliveries" in index
    assert f'href="{reverse(CHANGELIST)}?status__exact=failed"' in index


def test_a_delivery_holding_a_drone_is_not_deleted(admin_client: Client, tenant: Tenant) -> None:
    make_fleet(1)
    delivery, drone = an_assigned_delivery(tenant)

    answer = admin_client.get(
        reverse("admin:deliveries_delivery_delete", args=[delivery.pk]), follow=True
    )

    assert shown(answer) == [
        f"Delivery {delivery.pk} is assigned and holds drone {drone.serial}; it cannot be deleted "
        "until it is finished. Cancel it instead (possible until pickup)."
    ]
    assert Delivery.objects.filter(pk=delivery.pk).exists()
    drone.refresh_from_db()
    assert drone.assigned_delivery_id == delivery.pk
    changelist = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert 'value="delete_selected"' not in changelist
