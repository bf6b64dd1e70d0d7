"""The customer and business pages, through Django's test client against the real database and
Redis. (The browser tests in tests/browser drive the same pages in Chromium.)"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from businesses.models import BusinessMember
from deliveries.models import Delivery, Quote
from drones.models import Drone
from portal import customers
from tests.conftest import ApiClient, Tenant, delivery_body

PASSWORD = "flying-parcel-9"
TRIP = {
    "pickup_place": "pike-place-market",
    "dropoff_place": "space-needle",
    "package_size": "small",
    "package_weight_kg": "2",
}


def signed_up(email: str) -> Client:
    client = Client()
    answer = client.post(
        reverse("signup"), {"email": email, "password1": PASSWORD, "password2": PASSWORD}
    )
    assert answer.status_code == 302, answer.content.decode()
    return client


def schedule(client: Client, **fields: Any) -> Delivery:
    """Ask for a quote, then confirm it: the delivery it made."""
    data = {**TRIP, **fields}
    quote_page = client.post(reverse("site-schedule"), {**data, "action": "quote"})
    assert quote_page.status_code == 200, quote_page.content.decode()
    quote_id = re.search(r'name="quote_id" value="([^"]+)"', quote_page.content.decode())
    assert quote_id is not None
    confirmed = client.post(
        reverse("site-schedule"), {**data, "action": "confirm", "quote_id": quote_id[1]}
    )
    assert confirmed.status_code == 302, confirmed.content.decode()
    return Delivery.objects.get(pk=confirmed["Location"].rstrip("/").rsplit("/", 1)[-1])


def field_error(page: Any, field: str) -> str:
    """The error text shown next to a field of the schedule form."""
    html = page.content.decode()
    ids = {"pickup_lat": "pickup-error", "dropoff_lat": "dropoff-error"}
    pattern = rf'id="{ids.get(field, "id_" + field + "_error")}"[^>]*>([^<]+)<'
    found = re.search(pattern, html)
    return found[1] if found else ""


@pytest.mark.django_db
def test_home_page_says_what_the_service_is_and_links_to_sign_up_log_in_and_tracking(
    client: Client,
) -> None:
    page = client.get("/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "by drone" in html
    assert f'href="{reverse("signup")}"' in html
    assert f'href="{reverse("login")}"' in html
    assert f'action="{reverse("track-lookup")}"' in html


def test_the_site_has_an_icon_and_browsers_asking_for_favicon_ico_are_sent_to_it(
    client: Client,
) -> None:
    from django.contrib.staticfiles import finders
    from django.templatetags.static import static

    icon = static("portal/favicon.svg")
    html = client.get("/").content.decode()
    assert f'<link rel="icon" href="{icon}" type="image/svg+xml">' in html
    answer = client.get("/favicon.ico")
    assert answer.status_code == 302 and answer["Location"] == icon
    found = finders.find("portal/favicon.svg")
    assert found is not None
    with open(found, encoding="utf-8") as svg:
        assert svg.read().startswith("<svg xmlns=")


@pytest.mark.django_db
def test_a_pasted_tracking_link_opens_its_tracking_page(client: Client, tenant: Tenant) -> None:
    token = "abcDEF_123-x"
    answer = client.get(reverse("track-lookup"), {"link": f"https://x.example/track/{token}/"})
    assert answer.status_code == 302
    assert answer["Location"] == reverse("track", kwargs={"token": token})
    garbage = client.get(reverse("track-lookup"), {"link": "<script>"})
    assert garbage["Location"] == reverse("home")


@pytest.mark.django_db
def test_sign_up_makes_a_customer_who_is_signed_in_and_sent_to_schedule() -> None:
    client = signed_up("Ada@Example.com")
    user = User.objects.get(username="ada@example.com")
    assert user.email == "ada@example.com"
    assert customers.membership_of(user) is None
    assert client.get(reverse("site-deliveries")).status_code == 200


@pytest.mark.django_db
def test_sign_up_errors_sit_next_to_their_field(client: Client) -> None:
    signed_up("ada@example.com")
    page = client.post(
        reverse("signup"),
        {"email": "ADA@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert "An account with this email address exists already." in page.content.decode()
    page = client.post(
        reverse("signup"), {"email": "bob@example.com", "password1": PASSWORD, "password2": "x"}
    )
    assert 'id="id_password2_error">The two passwords differ.' in page.content.decode()
    page = client.post(
        reverse("signup"),
        {"email": "bob@example.com", "password1": "12345678", "password2": "12345678"},
    )
    assert 'id="id_password1_error"' in page.content.decode()
    assert not User.objects.filter(username="bob@example.com").exists()


@pytest.mark.django_db
def test_log_in_takes_the_email_in_any_case_and_a_wrong_password_says_so(client: Client) -> None:
    signed_up("ada@example.com")
    wrong = client.post(reverse("login"), {"username": "ada@example.com", "password": "nope"})
    assert "That email address and password do not match an account." in wrong.content.decode()
    right = client.post(reverse("login"), {"username": "ADA@example.com", "password": PASSWORD})
    assert right.status_code == 302
    assert right["Location"] == reverse("site-deliveries")
    client.post(reverse("logout"))
    assert client.get(reverse("site-deliveries")).status_code == 302


@pytest.mark.django_db
def test_password_reset_emails_a_link_on_the_public_address_that_sets_a_new_password(
    client: Client, mailoutbox: list[Any], settings: Any
) -> None:
    settings.PUBLIC_BASE_URL = "https://drones.fabrikam.example"
    signed_up("ada@example.com")
    client.post(reverse("password_reset"), {"email": "ada@example.com"})
    assert len(mailoutbox) == 1
    link = re.search(r"https://drones\.fabrikam\.example(/password-reset/\S+)", mailoutbox[0].body)
    assert link is not None, mailoutbox[0].body
    form = client.get(link[1], follow=True)
    assert form.status_code == 200
    done = client.post(
        form.redirect_chain[-1][0],
        {"new_password1": "new-flying-parcel-7", "new_password2": "new-flying-parcel-7"},
    )
    assert done.status_code == 302
    assert Client().login(username="ada@example.com", password="new-flying-parcel-7")
    # Nobody learns whether an address has an account.
    client.post(reverse("password_reset"), {"email": "nobody@example.com"})
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_pages_of_customers_need_a_login(client: Client) -> None:
    for name in ("site-deliveries", "site-schedule", "site-keys"):
        answer = client.get(reverse(name))
        assert answer.status_code == 302
        assert answer["Location"].startswith(reverse("login"))


@pytest.mark.django_db
def test_a_customer_schedules_with_a_quote_first_and_sees_the_delivery_in_their_list(
    fleet: list[Drone],
) -> None:
    client = signed_up("ada@example.com")
    quote_page = client.post(reverse("site-schedule"), {**TRIP, "action": "quote"})
    html = quote_page.content.decode()
    quote = Quote.objects.get()
    assert f"{quote.price_amount} {quote.price_currency}" in html
    assert 'id="quote-pickup-eta"' in html and 'id="quote-dropoff-eta"' in html
    assert not Delivery.objects.exists()  # nothing is booked before confirming

    delivery = schedule(client)
    assert delivery.customer == User.objects.get(username="ada@example.com")
    assert delivery.business == customers.customers_business()
    assert delivery.business.serves_customers
    assert (delivery.pickup_address, delivery.dropoff_address) == (
        "Pike Place Market",
        "Space Needle",
    )
    listing = client.get(reverse("site-deliveries")).content.decode()
    assert reverse("site-delivery", kwargs={"delivery_id": delivery.id}) in listing
    assert "Requested: finding a drone" in listing
    detail = client.get(reverse("site-delivery", kwargs={"delivery_id": delivery.id}))
    assert reverse("track", kwargs={"token": delivery.tracking_token}) in detail.content.decode()


@pytest.mark.django_db
def test_typed_coordinates_work_without_the_map(fleet: list[Drone]) -> None:
    client = signed_up("ada@example.com")
    delivery = schedule(
        client,
        pickup_place="",
        pickup_lat="47.6097",
        pickup_lon="-122.3422",
        dropoff_place="",
        dropoff_lat="47.6205",
        dropoff_lon="-122.3493",
        dropoff_address="Flat 4, <b>back door</b>",
    )
    assert (delivery.dropoff_lat, delivery.dropoff_lon) == (47.6205, -122.3493)
    assert delivery.customer is not None
    page = Client()
    page.force_login(delivery.customer)
    html = page.get(reverse("site-delivery", kwargs={"delivery_id": delivery.id})).content
    assert b"Flat 4, &lt;b&gt;back door&lt;/b&gt;" in html
    assert b"<b>back door</b>" not in html


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"package_weight_kg": "40"}, "package_weight_kg", "No drone can carry 40 kg"),
        (
            {"dropoff_place": "", "dropoff_lat": "47.95", "dropoff_lon": "-122.3"},
            "dropoff_lat",
            "That place is out of range",
        ),
        ({"dropoff_place": ""}, "dropoff_lat", "Choose the dropoff on the map"),
        ({"dropoff_place": "pike-place-market"}, "dropoff_lat", "the same place"),
        (
            {"pickup_place": "", "pickup_lat": "95", "pickup_lon": "-122.3"},
            "pickup_lat",
            "",  # the form's own range check
        ),
        ({"pickup_time": "2020-01-01T10:00"}, "pickup_time", "That time has passed"),
        ({"package_weight_kg": "0"}, "package_weight_kg", "The weight must be more than 0 kg."),
    ],
)
@pytest.mark.django_db
def test_schedule_errors_are_in_a_customers_words_next_to_their_field(
    fleet: list[Drone], fields: dict[str, str], field: str, words: str
) -> None:
    client = signed_up("ada@example.com")
    page = client.post(reverse("site-schedule"), {**TRIP, **fields, "action": "quote"})
    assert page.status_code in (200, 422)
    html = page.content.decode()
    assert "Your quote" not in html
    if words:
        assert words in field_error(page, field) or (field == "pickup_lat" and words in html), html
    else:
        assert "Ensure this value is less than or equal to 90" in html
    assert "Traceback" not in html and "Unprocessable" not in html
    assert not Delivery.objects.exists()


@pytest.mark.django_db
def test_an_expired_quote_is_quoted_again_not_booked(fleet: list[Drone]) -> None:
    client = signed_up("ada@example.com")
    client.post(reverse("site-schedule"), {**TRIP, "action": "quote"})
    quote = Quote.objects.get()
    Quote.objects.filter(pk=quote.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    page = client.post(
        reverse("site-schedule"), {**TRIP, "action": "confirm", "quote_id": str(quote.pk)}
    )
    assert page.status_code == 200
    assert "That quote had expired; here is a new one." in page.content.decode()
    assert Quote.objects.count() == 2
    assert not Delivery.objects.exists()


@pytest.mark.django_db
def test_another_customers_delivery_is_a_404(fleet: list[Drone]) -> None:
    ada = signed_up("ada@example.com")
    delivery = schedule(ada)
    bob = signed_up("bob@example.com")
    url = reverse("site-delivery", kwargs={"delivery_id": delivery.id})
    assert bob.get(url).status_code == 404
    assert (
        bob.post(reverse("site-delivery-cancel", kwargs={"delivery_id": delivery.id})).status_code
        == 404
    )
    assert (
        reverse("site-delivery", kwargs={"delivery_id": delivery.id})
        not in bob.get(reverse("site-deliveries")).content.decode()
    )
    assert (
        bob.get(reverse("site-delivery", kwargs={"delivery_id": "not-a-uuid"})).status_code == 404
    )
    Delivery.objects.get(pk=delivery.pk, status=Delivery.Status.REQUESTED)


@pytest.mark.django_db
def test_a_customer_cancels_before_pickup_and_not_after(fleet: list[Drone]) -> None:
    client = signed_up("ada@example.com")
    delivery = schedule(client)
    url = reverse("site-delivery-cancel", kwargs={"delivery_id": delivery.id})
    page = client.post(url, follow=True)
    assert "The delivery is cancelled." in page.content.decode()
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.CANCELLED
    assert delivery.events.filter(note="cancelled on the site by customer ada@example.com").exists()

    later = schedule(client)
    Delivery.objects.filter(pk=later.pk).update(status=Delivery.Status.EN_ROUTE_TO_DROPOFF)
    page = client.post(
        reverse("site-delivery-cancel", kwargs={"delivery_id": later.id}), follow=True
    )
    assert "can no longer be cancelled" in page.content.decode()
    later.refresh_from_db()
    assert later.status == Delivery.Status.EN_ROUTE_TO_DROPOFF
    detail = client.get(reverse("site-delivery", kwargs={"delivery_id": later.id}))
    assert b"Cancel this delivery" not in detail.content


def member_of(tenant: Tenant, email: str = "ops@contoso.example") -> Client:
    user = User.objects.create_user(username=email, email=email, password=PASSWORD)
    BusinessMember.objects.create(user=user, business=tenant.business)
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_a_business_member_sees_the_business_deliveries_and_no_one_elses(
    fleet: list[Drone], tenant: Tenant, other_tenant: Tenant
) -> None:
    ours = tenant.client.post_json("/api/v1/deliveries", delivery_body()).json()["id"]
    theirs = other_tenant.client.post_json("/api/v1/deliveries", delivery_body()).json()["id"]
    customer_delivery = schedule(signed_up("ada@example.com"))
    member = member_of(tenant)
    listing = member.get(reverse("site-deliveries")).content.decode()
    assert "Contoso Pharmacy: deliveries" in listing
    assert f"/deliveries/{ours}" in listing
    assert f"/deliveries/{theirs}" not in listing
    assert f"/deliveries/{customer_delivery.id}" not in listing
    assert member.get(reverse("site-delivery", kwargs={"delivery_id": ours})).status_code == 200
    assert member.get(reverse("site-delivery", kwargs={"delivery_id": theirs})).status_code == 404


def pager_link(listing: str, label: str) -> str:
    """The query of the list's Newer or Older link, "" when it has none."""
    found = re.search(rf'<a href="(\?cursor=[^"]+)">{label}</a>', listing)
    return found[1].replace("&amp;", "&") if found else ""


@pytest.mark.django_db
def test_a_business_members_list_pages_by_older_and_newer_links_keeping_the_stage(
    fleet: list[Drone], tenant: Tenant
) -> None:
    ids = [
        tenant.client.post_json("/api/v1/deliveries", delivery_body()).json()["id"]
        for _ in range(23)
    ]
    Delivery.objects.filter(pk__in=ids[:2]).update(status=Delivery.Status.CANCELLED)
    member = member_of(tenant)
    url = reverse("site-deliveries")
    first = member.get(url).content.decode()
    assert pager_link(first, "Newer") == ""
    assert "Page 1 of" not in first  # nothing counts the rows
    assert all(f"/deliveries/{pk}" in first for pk in ids[3:])
    older = member.get(url + pager_link(first, "Older")).content.decode()
    assert [pk for pk in ids if f"/deliveries/{pk}" in older] == ids[:3]
    assert pager_link(older, "Older") == ""
    newer = member.get(url + pager_link(older, "Newer")).content.decode()
    assert [pk for pk in ids if f"/deliveries/{pk}" in newer] == ids[3:]
    cancelled = member.get(url, {"stage": "cancelled"}).content.decode()
    assert [pk for pk in ids if f"/deliveries/{pk}" in cancelled] == ids[:2]
    assert pager_link(cancelled, "Older") == ""
    # A cursor the site did not hand out shows the first page.
    assert f"/deliveries/{ids[-1]}" in member.get(url, {"cursor": "nonsense"}).content.decode()


@pytest.mark.django_db
def test_a_business_member_creates_a_key_shown_once_and_revokes_it_at_once(
    fleet: list[Drone], tenant: Tenant
) -> None:
    member = member_of(tenant)
    page = member.post(reverse("site-keys"), {"name": "order system"})
    key = re.search(r'id="new-key">([^<]+)<', page.content.decode())
    assert key is not None
    api = ApiClient(key[1])
    assert api.get("/api/v1/deliveries").status_code == 200
    again = member.get(reverse("site-keys")).content.decode()
    assert key[1] not in again  # shown once
    assert "order system" in again
    prefix = key[1].split(".", 1)[0]
    member.post(reverse("site-key-revoke", kwargs={"prefix": prefix}))
    assert api.get("/api/v1/deliveries").status_code == 401


@pytest.mark.django_db
def test_customers_have_no_key_pages_and_members_cannot_revoke_other_businesses_keys(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    customer = signed_up("ada@example.com")
    assert customer.get(reverse("site-keys")).status_code == 404
    member = member_of(tenant)
    other_prefix = other_tenant.key.split(".", 1)[0]
    answer = member.post(reverse("site-key-revoke", kwargs={"prefix": other_prefix}))
    assert answer.status_code == 404
    assert other_tenant.client.get("/api/v1/deliveries").status_code == 200


@pytest.mark.django_db
def test_forms_refuse_a_post_without_the_csrf_token(fleet: list[Drone]) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_user(username="ada@example.com", password=PASSWORD))
    answer = client.post(reverse("site-schedule"), {**TRIP, "action": "quote"})
    assert answer.status_code == 403
    assert Client(enforce_csrf_checks=True).post(reverse("signup"), {}).status_code == 403


@pytest.mark.django_db
def test_pages_carry_a_csp_without_inline_scripts(fleet: list[Drone], tenant: Tenant) -> None:
    client = signed_up("ada@example.com")
    delivery = schedule(client)
    member = member_of(tenant)
    pages = [
        (Client(), "/"),
        (Client(), reverse("signup")),
        (Client(), reverse("login")),
        (Client(), reverse("password_reset")),
        (client, reverse("site-schedule")),
        (client, reverse("site-deliveries")),
        (client, reverse("site-delivery", kwargs={"delivery_id": delivery.id})),
        (member, reverse("site-keys")),
        (Client(), reverse("docs")),
    ]
    for who, url in pages:
        answer = who.get(url)
        assert answer.status_code == 200, url
        policy = answer["Content-Security-Policy"]
        script_src = re.search(r"script-src ([^;]+)", policy)
        assert script_src is not None and "unsafe-inline" not in script_src[1], url
        for tag in re.findall(r"<script\b[^>]*>", answer.content.decode()):
            assert "src=" in tag or 'type="application/json"' in tag, (url, tag)


@pytest.mark.django_db
def test_the_customer_and_the_recipient_both_hear_of_every_stage(fleet: list[Drone]) -> None:
    from deliveries.lifecycle import delivery_move
    from notifications.models import Subscription

    client = signed_up("ada@example.com")
    delivery = schedule(client, recipient_name="Bob", recipient_email="bob@example.com")
    with transaction.atomic():
        delivery_move(Delivery.objects.select_for_update().get(pk=delivery.pk), "cancelled")
    emails = set(Subscription.objects.filter(delivery=delivery).values_list("email", flat=True))
    assert emails == {"ada@example.com", "bob@example.com"}
