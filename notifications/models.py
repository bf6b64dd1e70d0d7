"""Who hears about a delivery (subscriptions) and each email owed to one of them (notifications).

Notifications are written in the transaction of the stage change they are about (the outbox
pattern) and sent by workers after commit; their status is the claim that keeps a redelivered
or duplicated message from sending one twice.
"""

from __future__ import annotations

import secrets
import uuid

from django.db import models


def unsubscribe_token() -> str:
    return secrets.token_urlsafe(24)


class Subscription(models.Model):
    """An address that hears about one delivery's stage changes until it unsubscribes.

    The customers' addresses (the recipient's and the site customer's, else the business's) are
    subscribed at the first stage change; anyone with the tracking link may add theirs
    ("Notify me"), a few per delivery.
    Unsubscribing keeps the row, inactive, so that the customer is not subscribed again.
    """

    class Source(models.TextChoices):
        CUSTOMER = "customer"
        NOTIFY_ME = "notify_me"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    delivery = models.ForeignKey(
        "deliveries.Delivery", on_delete=models.CASCADE, related_name="subscriptions"
    )
    email = models.EmailField()
    source = models.CharField(max_length=12, choices=Source.choices)
    token = models.CharField(max_length=64, unique=True, default=unsubscribe_token)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "email"], name="subscription_unique")
        ]

    def __str__(self) -> str:
        return f"{self.email} on {self.delivery_id}"


class Notification(models.Model):
    """One email owed to one subscription about one stage change of its delivery."""

    class Kind(models.TextChoices):
        ASSIGNED = "assigned"
        PICKED_UP = "picked_up"
        DELIVERED = "delivered"
        CANCELLED = "cancelled"
        FAILED = "failed"

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"  # claimed by a worker at claimed_at
        SENT = "sent"
        SKIPPED = "skipped"  # unsubscribed before it was sent
        FAILED = "failed"  # the mail server refused it every time

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    delivery = models.ForeignKey(
        "deliveries.Delivery", on_delete=models.CASCADE, related_name="notifications"
    )
    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="notifications"
    )
    kind = models.CharField(max_length=12, choices=Kind.choices)
    email = models.EmailField()
    # The delivery's version after the change: one email per address and change, even if
    # the same stage comes back (assigned again after its drone was grounded).
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    claimed_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "kind", "version"], name="notification_once"
            )
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status__in=["pending", "sending"]),
                name="notification_unsent",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} to {self.email} ({self.status})"
