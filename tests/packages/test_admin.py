"""Operators read the package documents in MongoDB through Django admin: a list, a search by id
or tag, and a document's page, with the reads Cosmos DB supports."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.urls import reverse

from devtools.localservices import free_port
from packages.services import package_upsert
from packages.store import packages_collection, packages_indexes_ensure
from tests.conftest import Tenant

pytestmark = pytest.mark.django_db

LIST = "admin:packages_package_list"


@pytest.fixture(autouse=True)
def own_database() -> Iterator[None]:
    """A MongoDB database of this test's own, so that the list shows only its packages."""
    with override_settings(MONGODB_DATABASE=f"admin-{uuid.uuid4().hex[:12]}"):
        yield


def a_package(tenant: Tenant, *, tag: str, weight_kg: float = 2.0) -> tuple[uuid.UUID, uuid.UUID]:
    package_id, delivery_id = uuid.uuid4(), uuid.uuid4()
    package_upsert(
        package_id=package_id,
        business_id=tenant.business.id,
        delivery_id=delivery_id,
        size="small",
        weight_kg=weight_kg,
        tag=tag,
    )
    return package_id, delivery_id


def test_packages_are_listed_from_mongodb_and_linked_from_the_admin_index(
    admin_client: Client, tenant: Tenant
) -> None:
    package_id, delivery_id = a_package(tenant, tag="pharmacy")

    index = admin_client.get(reverse("admin:index")).content.decode()
    assert f'href="{reverse(LIST)}"' in index

    body = admin_client.get(reverse(LIST)).content.decode()
    assert str(package_id) in body and "pharmacy" in body
    assert "Contoso Pharmacy" in body  # its business by name
    assert reverse("admin:deliveries_delivery_change", args=[delivery_id]) in body


def test_the_list_pages_through_the_packages_in_id_order(
    admin_client: Client, tenant: Tenant
) -> None:
    ids = sorted(str(a_package(tenant, tag="bulk")[0]) for _ in range(53))

    first = admin_client.get(reverse(LIST)).content.decode()
    assert all(i in first for i in ids[:50]) and not any(i in first for i in ids[50:])
    assert f"?after={ids[49]}" in first

    second = admin_client.get(reverse(LIST), {"after": ids[49]}).content.decode()
    assert all(i in second for i in ids[50:]) and ids[49] not in second


def test_a_package_is_found_by_its_id_or_its_tag(admin_client: Client, tenant: Tenant) -> None:
    packages_indexes_ensure()
    wanted, _ = a_package(tenant, tag=f"fragile-{uuid.uuid4().hex[:6]}")
    tag = packages_collection().find_one({"_id": str(wanted)})["tag"]  # type: ignore[index]
    other, _ = a_package(tenant, tag="flowers")

    by_id = admin_client.get(reverse(LIST), {"q": str(wanted)}).content.decode()
    assert str(wanted) in by_id and str(other) not in by_id
    assert "1 package with id" in by_id

    by_tag = admin_client.get(reverse(LIST), {"q": tag}).content.decode()
    assert str(wanted) in by_tag and str(other) not in by_tag

    nothing = admin_client.get(reverse(LIST), {"q": str(uuid.uuid4())}).content.decode()
    assert "0 packages with id" in nothing


def test_a_package_page_shows_the_whole_document_with_its_delivery(
    admin_client: Client, tenant: Tenant
) -> None:
    package_id, delivery_id = a_package(tenant, tag="pharmacy", weight_kg=3.25)

    page = admin_client.get(reverse("admin:packages_package_detail", args=[package_id]))

    body = page.content.decode()
    assert page.status_code == 200
    assert "3.25" in body and "pharmacy" in body and "small" in body
    assert reverse("admin:deliveries_delivery_change", args=[delivery_id]) in body
    assert "Contoso Pharmacy" in body
    missing = reverse("admin:packages_package_detail", args=[uuid.uuid4()])
    assert admin_client.get(missing).status_code == 404


def test_an_unreachable_package_store_is_said_not_a_server_error(admin_client: Client) -> None:
    with override_settings(
        MONGODB_URI=f"mongodb://127.0.0.1:{free_port()}/", MONGODB_TIMEOUT_MS=300
    ):
        page = admin_client.get(reverse(LIST))

    assert page.status_code == 200
    assert "The package store (MongoDB) cannot be reached" in page.content.decode()


def test_packages_are_for_staff_who_may_view_deliveries(client: Client) -> None:
    clerk = User.objects.create_user("clerk", password="a long passphrase", is_staff=True)
    client.force_login(clerk)

    assert client.get(reverse(LIST)).status_code == 403
    assert "Packages" not in client.get(reverse("admin:index")).content.decode()
