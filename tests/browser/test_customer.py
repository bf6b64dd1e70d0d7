"""A customer in the browser: sign up, schedule on the map, see the quote, confirm, and watch the
delivery fly to "delivered" (real worker, real simulator sped up, the live process's feed); the
public link; other people's deliveries; CSRF and escaping."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from playwright.sync_api import Dialog, Page, expect

from deliveries.models import Delivery
from portal import customers
from tests.browser.conftest import Site
from tests.conftest import MailSink, make_fleet, worker_env
from tests.deliveries.test_fleet_end_to_end import STAGES, fleet_simulator
from tests.support import celery_beat, celery_worker

pytestmark = pytest.mark.browser

PASSWORD = "correct-horse-battery-7"
SPEEDUP = 30
# Recorded by the page itself: every stage the tracking page showed, and a flag that a reload
# (or any navigation) would wipe.
WATCH_STAGES = """() => {
  window.__sameDocument = true;
  window.__stages = [document.getElementById("stage").dataset.status];
  const stage = document.getElementById("stage");
  new MutationObserver(() => {
    const now = stage.dataset.status;
    if (window.__stages[window.__stages.length - 1] !== now) { window.__stages.push(now); }
  }).observe(stage, { attributes: true, childList: true, subtree: true });
}"""


def customer(email: str) -> User:
    return customers.customer_signup(email=email, password=PASSWORD)


def delivery_for(user: User, **fields: Any) -> Delivery:
    """A delivery the customer scheduled (made directly: these tests need no flight)."""
    values: dict[str, Any] = {
        "business": customers.customers_business(),
        "customer": user,
        "pickup_lat": 47.6097,
        "pickup_lon": -122.3422,
        "pickup_address": "Pike Place Market",
        "dropoff_lat": 47.6205,
        "dropoff_lon": -122.3493,
        "dropoff_address": "Space Needle",
        "package_size": Delivery.Size.SMALL,
        "package_weight_kg": 2.0,
        **fields,
    }
    return Delivery.objects.create(**values)


@pytest.fixture
def flying_env(process_env: dict[str, str], mail_server: tuple[MailSink, int]) -> dict[str, str]:
    return {**worker_env(process_env, mail_server[1]), "FLEET_SIM_SPEEDUP": str(SPEEDUP)}


def test_a_customer_signs_up_schedules_on_the_map_and_watches_the_drone_deliver(
    site: Site, flying_env: dict[str, str], tmp_path: Path
) -> None:
    make_fleet(2)  # at one base in the middle of the map
    with (
        override_settings(FLEET_SIM_SPEEDUP=SPEEDUP),
        celery_worker(flying_env, log=tmp_path / "worker.log", concurrency=2),
        celery_beat(flying_env, tmp_path),
        fleet_simulator(flying_env, site.url, tmp_path / "simulator.log"),
    ):
        page = site.visitor()
        page.goto("/")
        site.shoot(page, "home")
        page.get_by_role("link", name="Sign up").first.click()

        expect(page).to_have_url(re.compile(r"/signup$"))
        page.get_by_label("Email address").fill("ada@example.com")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Password again").fill(PASSWORD)
        site.shoot(page, "signup")
        page.get_by_role("button", name="Sign up").click()

        # Signed up and signed in, straight to scheduling.
        expect(page).to_have_url(re.compile(r"/deliveries/new$"))
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
        schedule_on_the_map(page)
        site.shoot(page, "schedule", again=False)

        # Too heavy for any drone: said next to the weight, in words a customer understands.
        page.locator("#id_package_weight_kg").fill("40")
        page.get_by_role("button", name="See the price and times").click()
        expect(page.locator("#id_package_weight_kg_error")).to_contain_text(
            "No drone can carry 40 kg"
        )
        # And said at the top, linked to the field, for a phone whose screen ends far above it.
        summary = page.locator(".form-errors a[href='#id_package_weight_kg']")
        expect(summary).to_contain_text("No drone can carry 40 kg")
        # The places chosen on the map are kept.
        expect(page.locator("[name=dropoff_lat]")).not_to_have_value("")
        site.shoot(page, "schedule-error", again=False)

        page.locator("#id_package_weight_kg").fill("1.5")
        page.get_by_role("button", name="See the price and times").click()
        expect(page.locator("#quote-price")).to_have_text(re.compile(r"^\d+\.\d\d USD$"))
        expect(page.locator("#quote-pickup-eta")).to_have_attribute("datetime", re.compile(r"\d"))
        expect(page.locator("#quote-dropoff-eta")).to_have_attribute("datetime", re.compile(r"\d"))
        site.shoot(page, "quote", again=False)
        price = page.locator("#quote-price").inner_text()
        page.locator("button[value=confirm]").click()

        expect(page).to_have_url(re.compile(r"/deliveries/[0-9a-f-]{36}$"))
        expect(page.get_by_text("Your pickup is scheduled")).to_be_visible()
        expect(page.get_by_text(price)).to_be_visible()
        delivery = Delivery.objects.get(customer__email="ada@example.com")
        assert delivery.package_weight_kg == 1.5
        site.shoot(page, "delivery")

        page.get_by_role("link", name="Follow it live").click()
        expect(page).to_have_url(re.compile(rf"/track/{delivery.tracking_token}$"))
        page.evaluate(WATCH_STAGES)
        stage = page.locator("#stage")
        # (The worker may still be starting on a loaded machine: give the first stages time.)
        in_flight = re.compile("en_route_to_pickup|at_pickup|en_route_to_dropoff|at_dropoff")
        expect(stage).to_have_attribute("data-status", in_flight, timeout=45_000)
        # In flight: the drone on the map, the arrival time, the stages so far.
        expect(page.locator("#track-map .pin-drone")).to_be_visible()
        expect(page.locator("#dropoff-eta time")).to_have_text(re.compile(r"\d\d:\d\d"))
        expect(page.locator("#timeline li[data-status=assigned]")).to_have_count(1)
        site.shoot(page, "track-flying")

        expect(stage).to_have_attribute("data-status", "delivered", timeout=60_000)
        expect(stage).to_have_text("Delivered")
        timeline = page.locator("#timeline li[data-status]")
        expect(timeline).to_have_count(len(STAGES))
        assert [li.get_attribute("data-status") for li in timeline.all()] == STAGES
        expect(page.locator("#dropoff-eta")).to_be_hidden()

        # The page followed the flight by itself: the same document all along, several stages.
        assert page.evaluate("window.__sameDocument") is True
        stages = page.evaluate("window.__stages")
        assert stages[-1] == "delivered" and len(stages) >= 3, stages
        site.shoot(page, "track-delivered")

        page.goto("/deliveries/")
        row = page.locator("tr", has_text="Delivered")
        expect(row).to_have_count(1)
        site.shoot(page, "my-deliveries")
    site.assert_clean()


def schedule_on_the_map(page: Page) -> None:
    """A click on the map sets the pickup, the next one the dropoff (about 1.5 km apart, both
    within a kilometre of the base at the map's centre)."""
    the_map = page.locator("#schedule-map")
    expect(the_map.locator(".leaflet-container, .leaflet-pane").first).to_be_attached()
    box = the_map.bounding_box()
    assert box is not None
    middle_x, middle_y = box["width"] / 2, box["height"] / 2
    the_map.click(position={"x": middle_x - 40, "y": middle_y - 30})
    expect(page.locator("[name=pickup_lat]")).not_to_have_value("")
    the_map.click(position={"x": middle_x + 50, "y": middle_y + 40})
    expect(page.locator("[name=dropoff_lat]")).not_to_have_value("")
    pickup = float(page.locator("[name=pickup_lat]").input_value())
    dropoff = float(page.locator("[name=dropoff_lat]").input_value())
    assert pickup > dropoff  # north, then south of the centre: two places, in that order
    page.locator("#id_package_weight_kg").fill("1.5")


def test_the_public_link_shows_that_delivery_and_nothing_else(site: Site) -> None:
    ada = customer("ada@example.com")
    shared = delivery_for(
        ada, status=Delivery.Status.EN_ROUTE_TO_DROPOFF, recipient_name="Grace Hopper"
    )
    delivery_for(ada, dropoff_address="Secret Garden 42", recipient_name="Mallory")
    failed = delivery_for(
        ada,
        status=Delivery.Status.FAILED,
        failure_reason="OperationalError: connection to 10.0.0.7:5432 refused (Traceback …)",
    )

    page = site.visitor()  # the recipient: no account, no login
    response = page.goto(f"/track/{shared.tracking_token}")
    assert response is not None and response.status == 200
    # Under a policy that runs no inline script (the page's scripts are files).
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    assert "'unsafe-inline'" not in policy["script-src"]
    expect(page.locator("#stage")).to_have_text("On its way to you")
    expect(page.locator("#dropoff-place")).to_contain_text("Space Needle")
    html = page.content()
    for private in ("ada@example.com", "Secret Garden", "Mallory", str(shared.id)):
        assert private not in html, private
    expect(page.locator("a[href^='/deliveries']")).to_have_count(0)
    expect(page.get_by_role("link", name="My deliveries")).to_have_count(0)
    expect(page.get_by_role("link", name="Log in")).to_be_visible()

    # A failure shows in a customer's words, never the internal error behind it.
    page.goto(f"/track/{failed.tracking_token}")
    expect(page.locator("#stage")).to_have_attribute("data-status", "failed")
    text = page.locator("body").inner_text()
    for internal in ("OperationalError", "10.0.0.7", "Traceback", "5432"):
        assert internal not in text, internal
    site.assert_clean()


def test_another_customers_delivery_is_a_404(site: Site) -> None:
    ada = customer("ada@example.com")
    theirs = delivery_for(ada, dropoff_address="Ada's studio")
    customer("bob@example.com")

    page = site.visitor()
    page.goto("/login")
    page.get_by_label("Email address").fill("bob@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    site.shoot(page, "login", again=False)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/deliveries/$"))
    expect(page.get_by_text("You have no deliveries yet")).to_be_visible()

    response = page.goto(f"/deliveries/{theirs.id}")
    assert response is not None and response.status == 404
    assert "Ada's studio" not in page.content()
    page.goto("/deliveries/")
    token = page.locator("[name=csrfmiddlewaretoken]").first.input_value()
    cancel = page.request.post(
        f"/deliveries/{theirs.id}/cancel", form={"csrfmiddlewaretoken": token}
    )
    assert cancel.status == 404
    theirs.refresh_from_db()
    assert theirs.status == Delivery.Status.REQUESTED
    site.assert_clean()


def test_forms_posted_without_their_csrf_token_are_refused(site: Site) -> None:
    page = site.visitor()
    page.goto("/signup")
    form: dict[str, str | float | bool] = {
        "email": "eve@example.com",
        "password1": PASSWORD,
        "password2": PASSWORD,
    }
    refused = page.request.post("/signup", form=form)
    assert refused.status == 403
    assert not User.objects.filter(username="eve@example.com").exists()
    # The same form with the page's token is taken.
    token = page.locator("[name=csrfmiddlewaretoken]").first.input_value()
    taken = page.request.post("/signup", form={**form, "csrfmiddlewaretoken": token})
    assert taken.status == 200 and taken.url.endswith("/deliveries/new")
    assert User.objects.filter(username="eve@example.com").exists()

    # Signed in, scheduling without the token is refused too.
    page.goto("/deliveries/new")
    trip: dict[str, str | float | bool] = {
        "pickup_place": "pike-place-market",
        "dropoff_place": "space-needle",
        "package_size": "small",
        "package_weight_kg": "1",
    }
    assert page.request.post("/deliveries/new", form=trip).status == 403
    site.assert_clean()


XSS = "<img src=x onerror=alert(1)>"


def test_user_supplied_text_is_shown_as_text(site: Site) -> None:
    make_fleet(1)
    ada = customer("ada@example.com")
    page = site.signed_in(ada)
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)

    page.goto("/deliveries/new")
    page.locator("#id_pickup_place").select_option("pike-place-market")
    page.locator("#id_dropoff_place").select_option("space-needle")
    page.locator("#id_dropoff_address").fill(XSS)
    page.locator("#id_recipient_name").fill("<script>alert(2)</script>")
    page.locator("#id_package_weight_kg").fill("1")
    page.get_by_role("button", name="See the price and times").click()
    expect(page.locator("#quote")).to_contain_text(XSS)
    expect(page.locator("img[src=x]")).to_have_count(0)

    # The same text stored (as a confirmed delivery would hold it), on every page showing it.
    delivery = delivery_for(ada, dropoff_address=XSS, recipient_name="<script>alert(2)</script>")
    for path in ("/deliveries/", f"/deliveries/{delivery.id}", f"/track/{delivery.tracking_token}"):
        page.goto(path)
        expect(page.get_by_text(XSS).first).to_be_visible()
        expect(page.locator("img[src=x]")).to_have_count(0)
    page.goto(f"/deliveries/{delivery.id}")
    expect(page.get_by_text("<script>alert(2)</script>")).to_be_visible()
    page.wait_for_timeout(300)  # an injected handler would have run by now
    assert dialogs == []
    site.assert_clean()
