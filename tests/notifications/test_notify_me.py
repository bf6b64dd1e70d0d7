""" "Notify me" on the public tracking page, and the unsubscribe link of every email, through the
Django test client with CSRF checks on."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from django.test import Client

from deliveries.lifecycle import delivery_move
from deliveries.models import Delivery
from deliveries.services import delivery_assign
from drones.models import Drone
from notifications.models import Subscription
from tests.conftest import MailSink, Tenant
from tests.notifications.test_emails import body, create, emails, send_due


@pytest.fixture
def browser() -> Client:
    return Client(enforce_csrf_checks=True)


def notify_me(browser: Client, delivery: Delivery, address: str) -> str:
    page = browser.get(f"/track/{delivery.tracking_token}")
    assert page.status_code == 200
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)
    assert token is not None
    response = browser.post(
        f"/track/{delivery.tracking_token}/notify",
        {"email": address, "csrfmiddlewaretoken": token.group(1).decode()},
    )
    assert response.status_code == 200
    return response.content.decode()


def test_the_tracking_page_has_a_labelled_notify_me_form(
    tenant: Tenant, fleet: list[Drone], browser: Client
) -> None:
    delivery = create(tenant)
    page = browser.get(f"/track/{delivery.tracking_token}").content.decode()
    assert f'action="/track/{delivery.tracking_token}/notify"' in page
    assert '<label for="notify-email">' in page and 'id="notify-email"' in page


def test_notify_me_without_the_csrf_token_is_refused(
    tenant: Tenant, fleet: list[Drone], browser: Client
) -> None:
    delivery = create(tenant)
    response = browser.post(f"/track/{delivery.tracking_token}/notify", {"email": "a@b.example"})
    assert response.status_code == 403
    assert not Subscription.objects.filter(source="notify_me").exists()


def test_a_subscriber_hears_about_each_stage_and_can_unsubscribe(
    tenant: Tenant, fleet: list[Drone], smtp: MailSink, browser: Client
) -> None:
    delivery = create(tenant)
    answer = notify_me(browser, delivery, "Neighbour@Example.com")
    assert "we will email this address" in answer
    assert "ada@example.com" not in answer

    assert delivery_assign(delivery_id=delivery.id).result == "assigned"
    assert send_due() == 2
    by_address = {m["To"]: m for m in emails(smtp)}
    assert set(by_address) == {"ada@example.com", "neighbour@example.com"}
    to_neighbour = body(by_address["neighbour@example.com"])
    assert "Ada" not in to_neighbour  # the recipient's name is not told to others
    assert f"/track/{delivery.tracking_token}" in to_neighbour

    link = re.search(r"Stop these emails: (\S+)", to_neighbour)
    assert link is not None
    path = urlsplit(link.group(1)).path
    confirm = browser.get(path)
    assert confirm.status_code == 200
    assert b"Unsubscribe" in confirm.content
    assert Subscription.objects.get(email="neighbour@example.com").active  # GET changes nothing
    done = browser.post(path)
    assert done.status_code == 200 and b"Unsubscribed" in done.content

    smtp.messages.clear()
    for stage in ("en_route_to_pickup", "at_pickup", "en_route_to_dropoff"):
        delivery = delivery_move(Delivery.objects.get(pk=delivery.pk), stage)
    assert send_due() == 1
    assert [m["To"] for m in emails(smtp)] == ["ada@example.com"]


def test_one_click_unsubscribe_per_rfc_8058(
    tenant: Tenant, fleet: list[Drone], smtp: MailSink
) -> None:
    delivery = create(tenant)
    assert delivery_assign(delivery_id=delivery.id).result == "assigned"
    send_due()
    [message] = emails(smtp)
    url = "".join(message["List-Unsubscribe"].split()).strip("<>")  # unfolded
    # What a mail client sends: no cookie, no CSRF token.
    response = Client(enforce_csrf_checks=True).post(
        urlsplit(url).path,
        "List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert not Subscription.objects.get(email="ada@example.com").active

    delivery_move(Delivery.objects.get(pk=delivery.pk), "cancelled")
    assert send_due() == 0


def test_a_forged_unsubscribe_link_is_not_found(
    tenant: Tenant, fleet: list[Drone], browser: Client
) -> None:
    subscription = Subscription.objects.create(
        delivery=create(tenant), email="a@b.example", source="notify_me"
    )
    assert browser.get(f"/notifications/unsubscribe/{subscription.token}").status_code == 404
    forged = f"/notifications/unsubscribe/{subscription.token}:AAAAAAAAAAAAAAAAAAAAAAAAAAA"
    assert browser.post(forged).status_code == 404
    assert Subscription.objects.get(pk=subscription.pk).active


def test_at_most_five_addresses_per_delivery_and_asking_twice_is_harmless(
    tenant: Tenant, fleet: list[Drone], browser: Client
) -> None:
    delivery = create(tenant)
    for i in range(5):
        assert "we will email" in notify_me(browser, delivery, f"n{i}@example.com")
    assert "we will email" in notify_me(browser, delivery, "n0@example.com")
    assert "No more addresses" in notify_me(browser, delivery, "n5@example.com")
    emails_on_file = set(delivery.subscriptions.values_list("email", flat=True))
    assert emails_on_file == {f"n{i}@example.com" for i in range(5)}


def test_a_finished_delivery_takes_no_more_addresses(
    tenant: Tenant, fleet: list[Drone], browser: Client
) -> None:
    delivery = create(tenant)
    page = browser.get(f"/track/{delivery.tracking_token}")
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)
    assert token is not None
    delivery_move(Delivery.objects.get(pk=delivery.pk), "cancelled")
    response = browser.post(
        f"/track/{delivery.tracking_token}/notify",
        {"email": "late@example.com", "csrfmiddlewaretoken": token.group(1).decode()},
    )
    assert b"nothing more to tell" in response.content
    assert b'id="notify-me"' not in browser.get(f"/track/{delivery.tracking_token}").content
