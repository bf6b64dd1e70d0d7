"""An operator in Django admin: grounds a drone, retries failed deliveries (a real worker takes
the retried one), and is told in sentences what happened."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Page, expect

from deliveries.models import Delivery
from drones.models import Drone
from portal import customers
from tests.browser.conftest import Site
from tests.conftest import MailSink, make_fleet, worker_env
from tests.support import celery_worker, wait_for

pytestmark = pytest.mark.browser

PASSWORD = "correct-horse-battery-7"


@pytest.fixture
def operator(transactional_db: None) -> User:
    return User.objects.create_superuser("ops", "ops@fabrikam.example", PASSWORD)


def admin_login(site: Site, operator: User) -> Page:
    page = site.visitor()
    page.goto("/admin/")
    page.get_by_label("Username").fill(operator.get_username())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#site-name")).to_be_visible()
    return page


def run_action(page: Page, action: str, *rows: str) -> None:
    """Tick the changelist rows that hold each text, choose the action, press Go."""
    for text in rows:
        page.locator("#result_list tr", has_text=text).locator("input.action-select").check()
    page.locator("select[name=action]").select_option(action)
    page.get_by_role("button", name="Go").click()


def failed_delivery(**fields: Any) -> Delivery:
    values: dict[str, Any] = {
        "business": customers.customers_business(),
        "status": Delivery.Status.FAILED,
        "failure_reason": "no drone became free in time",
        "pickup_lat": 47.6097,
        "pickup_lon": -122.3422,
        "dropoff_lat": 47.6205,
        "dropoff_lon": -122.3493,
        "package_size": Delivery.Size.SMALL,
        "package_weight_kg": 2.0,
        **fields,
    }
    return Delivery.objects.create(**values)


def test_an_operator_grounds_a_drone_and_is_told_what_that_means(
    site: Site, operator: User
) -> None:
    grounded, other = make_fleet(2)
    page = admin_login(site, operator)
    page.goto("/admin/drones/drone/")
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    site.shoot(page, "admin-drones")

    run_action(page, "ground", grounded.serial)
    expect(page.locator(".messagelist .success")).to_have_text(
        re.compile(r"^1 drone grounded: never assigned until it is released")
    )
    expect(page.locator("#result_list tr", has_text=grounded.serial)).to_contain_text("Grounded")
    grounded.refresh_from_db()
    other.refresh_from_db()
    assert (grounded.state, other.state) == (Drone.State.GROUNDED, Drone.State.IDLE)

    # Its page: state, and where it is on a small map (drawn by a static script, under the CSP).
    page.locator("#result_list a", has_text=grounded.serial).click()
    expect(page.locator("#drone-map.leaflet-container")).to_be_visible()
    site.shoot(page, "admin-drone")
    site.assert_clean()


def test_an_operator_retries_failed_deliveries_and_each_says_what_happened(
    site: Site,
    operator: User,
    process_env: dict[str, str],
    mail_server: tuple[MailSink, int],
    tmp_path: Path,
) -> None:
    make_fleet(1)
    retryable = failed_delivery(recipient_name="Retry me")
    too_late = failed_delivery(
        recipient_name="Too late", deadline=timezone.now() - timedelta(minutes=5)
    )
    env = worker_env(process_env, mail_server[1])
    with celery_worker(env, log=tmp_path / "worker.log", concurrency=1):
        page = admin_login(site, operator)
        page.get_by_role("link", name="Failed deliveries").first.click()
        expect(page.locator("#result_list tbody tr")).to_have_count(2)
        site.shoot(page, "admin-failed-deliveries")

        run_action(page, "retry_failed", str(retryable.id)[:8], str(too_late.id)[:8])
        expect(page.locator(".messagelist .success")).to_have_text(
            re.compile(r"^1 delivery sent back to the workflow")
        )
        refused = page.locator(".messagelist .warning")
        expect(refused).to_contain_text(f"Delivery {str(too_late.id)[:8]} not retried")
        expect(refused).to_contain_text("has passed; change it first")
        site.shoot(page, "admin-retried", again=False)

        # The retried delivery really went back to the workflow: a worker gave it the drone.
        def assigned() -> bool:
            retryable.refresh_from_db()
            return retryable.status == Delivery.Status.ASSIGNED

        wait_for(assigned, timeout=30, what="the retried delivery assigned a drone")
    too_late.refresh_from_db()
    assert too_late.status == Delivery.Status.FAILED

    page.goto(f"/admin/deliveries/delivery/{retryable.id}/change/")
    expect(page.get_by_text("retried by operator ops")).to_be_visible()
    site.assert_clean()
