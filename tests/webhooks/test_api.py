"""The webhook endpoints API, its tenant isolation, and the refusal of unsafe URLs."""

from __future__ import annotations

from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from deliveries.lifecycle import delivery_move
from tests.conftest import Tenant
from tests.webhooks.conftest import Receiver
from tests.webhooks.test_sending import make_delivery, send_all
from webhooks import services
from webhooks.models import WebhookAttempt, WebhookEndpoint

EVENTS = ["delivery.assigned", "delivery.delivered"]


def create(tenant: Tenant, url: str, events: list[str] = EVENTS) -> Any:
    return tenant.client.post_json("/api/v1/webhooks", {"url": url, "events": events})


def test_creating_answers_the_secret_once_and_reads_never_show_it(
    tenant: Tenant, receiver: Receiver
) -> None:
    response = create(tenant, receiver.url)
    assert response.status_code == 201
    body = response.json()
    assert body["secret"].startswith("whsec_")
    Webhook(body["secret"])  # the library takes it
    assert body["events"] == EVENTS and body["active"] is True

    listed = tenant.client.get("/api/v1/webhooks").json()
    assert [e["id"] for e in listed["results"]] == [body["id"]]
    read = tenant.client.get(f"/api/v1/webhooks/{body['id']}").json()
    assert "secret" not in read and "secret" not in listed["results"][0]
    assert read["url"] == receiver.url


def test_update_rotate_and_delete(tenant: Tenant, receiver: Receiver) -> None:
    endpoint_id = create(tenant, receiver.url).json()["id"]
    changed = tenant.client.patch_json(
        f"/api/v1/webhooks/{endpoint_id}", {"events": ["delivery.failed"], "active": False}
    )
    assert changed.status_code == 200
    assert changed.json()["events"] == ["delivery.failed"] and changed.json()["active"] is False

    rotated = tenant.client.post(f"/api/v1/webhooks/{endpoint_id}/rotate")
    assert rotated.status_code == 200
    endpoint = WebhookEndpoint.objects.get(pk=endpoint_id)
    assert rotated.json()["secret"] == endpoint.secret and endpoint.previous_secret

    assert tenant.client.delete(f"/api/v1/webhooks/{endpoint_id}").status_code == 204
    assert tenant.client.get(f"/api/v1/webhooks/{endpoint_id}").status_code == 404


def test_another_business_endpoint_is_a_404_everywhere(
    tenant: Tenant, other_tenant: Tenant, receiver: Receiver
) -> None:
    endpoint_id = create(tenant, receiver.url).json()["id"]
    base = f"/api/v1/webhooks/{endpoint_id}"
    client = other_tenant.client
    assert client.get(base).status_code == 404
    assert client.patch_json(base, {"active": False}).status_code == 404
    assert client.delete(base).status_code == 404
    assert client.post(f"{base}/rotate").status_code == 404
    assert client.get(f"{base}/attempts").status_code == 404
    assert client.post(f"{base}/messages/msg_x/resend").status_code == 404
    assert client.get("/api/v1/webhooks").json()["results"] == []
    assert WebhookEndpoint.objects.get(pk=endpoint_id).active


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"url": "not a url", "events": EVENTS}, 400),
        ({"url": "https://example.com/h", "events": ["delivery.exploded"]}, 400),
        ({"url": "https://example.com/h", "events": []}, 400),
        ({"url": "https://example.com/h", "events": EVENTS, "secret": "mine"}, 400),
        ([1, 2], 400),
    ],
)
def test_bad_input_is_refused_with_the_error_body(tenant: Tenant, body: Any, status: int) -> None:
    response = tenant.client.post_json("/api/v1/webhooks", body)
    assert response.status_code == status
    assert "error" in response.json() and response.json()["error"]["code"] == "invalid"


def test_a_malformed_endpoint_id_is_a_404(tenant: Tenant) -> None:
    assert tenant.client.get("/api/v1/webhooks/nope").status_code == 404


def test_attempts_are_listed_and_a_message_can_be_resent(
    tenant: Tenant, receiver: Receiver
) -> None:
    created = create(tenant, receiver.url).json()
    receiver.secret = created["secret"]
    receiver.fail_next = 1
    delivery_move(make_delivery(tenant), "assigned")
    send_all()

    page = tenant.client.get(f"/api/v1/webhooks/{created['id']}/attempts").json()
    assert [a["status_code"] for a in page["results"]] == [200, 500]
    message_id = page["results"][0]["message_id"]
    assert page["results"][0]["type"] == "delivery.assigned"

    resent = tenant.client.post(f"/api/v1/webhooks/{created['id']}/messages/{message_id}/resend")
    assert resent.status_code == 202 and resent.json()["status"] == "pending"
    send_all()
    assert [r.webhook_id for r in receiver.received] == [message_id] * 3
    assert len(receiver.processed) == 1


# --- unsafe URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://0.0.0.0/hook",
        "https://240.0.0.1/hook",
        "https://no-such-host.invalid/hook",
    ],
)
def test_urls_to_private_addresses_are_refused_in_production(
    tenant: Tenant, settings: Any, url: str
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = create(tenant, url)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unsafe_url"
    assert not WebhookEndpoint.objects.exists()


def test_only_https_without_debug(tenant: Tenant, settings: Any) -> None:
    settings.DEBUG = False
    response = create(tenant, "http://example.com/hook")
    assert response.status_code == 422
    assert "https://" in response.json()["error"]["message"]


def test_the_address_is_checked_again_at_send_time(
    tenant: Tenant, receiver: Receiver, settings: Any
) -> None:
    created = create(tenant, receiver.url).json()
    receiver.secret = created["secret"]
    delivery_move(make_delivery(tenant), "assigned")
    # As if the name now resolved to a private address (DNS rebinding).
    settings.WEBHOOK_ALLOW_PRIVATE = False
    send_all(rounds=1)
    assert receiver.received == []
    attempt = WebhookAttempt.objects.get()
    assert attempt.status_code is None and attempt.error.startswith("refused")


def test_event_types_are_documented_in_the_service(tenant: Tenant) -> None:
    assert set(services.EVENT_TYPES) == {
        "delivery.assigned",
        "delivery.picked_up",
        "delivery.delivered",
        "delivery.cancelled",
        "delivery.failed",
        "delivery.eta_changed",
    }


def test_a_url_with_an_impossible_port_is_a_422_not_a_500(tenant: Tenant) -> None:
    body = {"url": "https://example.com:99999/h", "events": EVENTS}
    response = tenant.client.post_json("/api/v1/webhooks", body)
    assert response.status_code == 422
    assert "port" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "url",
    ["https://example.com/a\x19b", "https://example.com/a b", "https://exa\x85mple.com/h"],
)
def test_a_url_with_a_control_character_or_a_space_is_a_400(tenant: Tenant, url: str) -> None:
    response = create(tenant, url)
    assert response.status_code == 400
    assert "url" in response.json()["error"]["fields"]
    assert not WebhookEndpoint.objects.exists()
