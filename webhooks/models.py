"""Businesses' webhook endpoints, the events recorded for them, and every attempt to send one."""

from __future__ import annotations

import uuid

from django.db import models


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


class WebhookEndpoint(models.Model):
    """A URL of a business that is sent the delivery events it subscribed to, signed with the
    Standard Webhooks scheme."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    business = models.ForeignKey(
        "businesses.Business", on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)
    active = models.BooleanField(default=True)
    description = models.CharField(max_length=200, blank=True)
    secret = models.CharField(max_length=100)
    # After a rotation the old secret signs too (one signature per secret) until this time, so
    # that receivers can switch without dropping a message.
    previous_secret = models.CharField(max_length=100, blank=True)
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    # Since when every attempt has failed (None after a success); past the limit the endpoint
    # is disabled and the business told.
    failing_since = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["business", "active"], name="webhook_endpoint_business")]

    def __str__(self) -> str:
        return self.url


class WebhookMessage(models.Model):
    """One event for one endpoint; its id is the `webhook-id` of every attempt to send it."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    id = models.CharField(primary_key=True, max_length=40, default=message_id, editable=False)
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    delivery_id = models.UUIDField()
    type = models.CharField(max_length=40)
    payload = models.JSONField()
    # The order of the (endpoint, delivery) stream: a message waits while an earlier one of its
    # stream is pending, so receivers see a delivery's events in the order they happened.
    sequence = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # When it is due; a sender that claims it pushes this ahead by a lease, so a message whose
    # worker died is sent again when the lease ends.
    next_attempt_at = models.DateTimeField()
    # Retried until then, then failed (reset by a resend).
    retry_until = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status="pending"),
                name="webhook_message_due",
            ),
            models.Index(fields=["delivery_id", "-sequence"], name="webhook_message_delivery"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "delivery_id", "sequence"], name="webhook_message_order"
            )
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.type} ({self.status})"


class WebhookAttempt(models.Model):
    """One try to send a message: kept 14 days for the business and operators."""

    message = models.ForeignKey(
        WebhookMessage, on_delete=models.CASCADE, related_name="attempts_made"
    )
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="attempts", db_index=False
    )
    at = models.DateTimeField(db_index=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    response_body = models.CharField(max_length=1000, blank=True)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["endpoint", "-at"], name="webhook_attempt_endpoint")]

    def __str__(self) -> str:
        return f"{self.message_id} at {self.at:%Y-%m-%d %H:%M:%S}: {self.status_code or self.error}"
