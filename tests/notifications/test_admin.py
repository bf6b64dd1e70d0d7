from __future__ import annotations

from typing import Any

from django.test import Client

from drones.models import Drone
from notifications.models import Notification, Subscription
from notifications.services import notifications_sweep
from tests.conftest import MailSink, Tenant
from tests.notifications.test_emails import assigned


def test_operators_see_the_emails_and_can_send_a_failed_one_again(
    admin_client: Client, tenant: Tenant, fleet: list[Drone], smtp: MailSink, settings: Any
) -> None:
    delivery = assigned(tenant, fleet)
    [notification] = Notification.objects.filter(delivery=delivery)
    Notification.objects.filter(pk=notification.pk).update(status="failed", last_error="boom")
    subscription = Subscription.objects.get(delivery=delivery)

    page = admin_client.get("/admin/notifications/notification/")
    assert page.status_code == 200 and b"ada@example.com" in page.content
    detail = admin_client.get(f"/admin/notifications/subscription/{subscription.pk}/change/")
    assert detail.status_code == 200
    assert subscription.token.encode() not in detail.content

    response = admin_client.post(
        "/admin/notifications/notification/",
        {"action": "send_again", "_selected_action": [str(notification.pk)]},
    )
    assert response.status_code == 302
    settings.NOTIFICATIONS_SWEEP_GRACE_SECONDS = 0
    assert notifications_sweep() == 1
    assert len(smtp.messages) == 1
