from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models


def tracking_token() -> str:
    return secrets.token_urlsafe(24)


class Delivery(models.Model):
    """A business's request to carry one package from a pickup to a dropoff by drone.

    The relational record is the source of truth; Redis holds a copy of the live status.
    """

    class Status(models.TextChoices):
        REQUESTED = "requested"
        ASSIGNED = "assigned"
        EN_ROUTE_TO_PICKUP = "en_route_to_pickup"
        AT_PICKUP = "at_pickup"
        EN_ROUTE_TO_DROPOFF = "en_route_to_dropoff"
        AT_DROPOFF = "at_dropoff"
        DELIVERED = "delivered"
        CANCELLED = "cancelled"
        FAILED = "failed"

    class Size(models.TextChoices):
        SMALL = "small"
        MEDIUM = "medium"
        LARGE = "large"

    class Confirmation(models.TextChoices):
        NONE = "none"
        PICTURE = "picture"
        FINGERPRINT = "fingerprint"
        VOICE = "voice"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by the composite indexes below, which lead with it: one index less to write.
    business = models.ForeignKey(
        "businesses.Business", on_delete=models.PROTECT, related_name="deliveries", db_index=False
    )
    # The person who scheduled it on the site (deliveries of the customers' business); None for
    # a delivery a business asked for through the API.
    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="deliveries",
        db_index=False,
    )
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.REQUESTED)
    # Bumped by every change of status (deliveries.lifecycle): the compare-and-swap token, and
    # the version of the live status copy in Redis, so that an older copy never overwrites a
    # newer one.
    version = models.PositiveIntegerField(default=0)

    pickup_lat = models.FloatField()
    pickup_lon = models.FloatField()
    pickup_address = models.CharField(max_length=300, blank=True)
    dropoff_lat = models.FloatField()
    dropoff_lon = models.FloatField()
    dropoff_address = models.CharField(max_length=300, blank=True)

    package_id = models.UUIDField(default=uuid.uuid4, editable=False)
    package_size = models.CharField(max_length=8, choices=Size.choices)
    package_weight_kg = models.FloatField()
    package_tag = models.CharField(max_length=100, blank=True)

    pickup_time = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField(null=True, blank=True)
    expedited = models.BooleanField(default=False)
    confirmation_required = models.CharField(
        max_length=12, choices=Confirmation.choices, default=Confirmation.NONE
    )
    recipient_name = models.CharField(max_length=200, blank=True)
    recipient_email = models.EmailField(blank=True)
    recipient_phone = models.CharField(max_length=40, blank=True)

    quote = models.ForeignKey("Quote", null=True, blank=True, on_delete=models.SET_NULL)
    price_amount = models.DecimalField(max_digits=10, decimal_places=2, null=True, blank=True)
    price_currency = models.CharField(max_length=3, blank=True)

    drone = models.ForeignKey(
        "drones.Drone", null=True, blank=True, on_delete=models.PROTECT, related_name="deliveries"
    )
    # The flight plan's routes, [[lat, lon], ...] each: "to_dropoff" from the request on,
    # "to_pickup" and "to_base" once a drone is assigned. Around the no-fly zones active then;
    # a zone that opens mid-flight replaces them (route_version counts, so drones see it).
    route = models.JSONField(null=True, blank=True)
    route_version = models.PositiveIntegerField(default=0)
    pickup_eta = models.DateTimeField(null=True, blank=True)
    dropoff_eta = models.DateTimeField(null=True, blank=True)
    failure_reason = models.CharField(max_length=300, blank=True)
    # While waiting for a free drone: when the workflow will look again. The sweeper
    # republishes deliveries whose next attempt is long overdue (a message lost by the broker).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # A pickup far ahead books its drone shortly before it is needed, not at request time: until
    # then no workflow message is in flight, and beat publishes one when this time comes.
    book_at = models.DateTimeField(null=True, blank=True)
    # Something operators must look at (the drone lost contact, or was grounded with the
    # package aboard); empty when all is well.
    attention = models.CharField(max_length=200, blank=True)

    tracking_token = models.CharField(max_length=64, unique=True, default=tracking_token)
    # The W3C traceparent of the request that created it (empty when not traced): the sweeper,
    # the booking and telemetry continue or link to that trace (portal/telemetry.py).
    traceparent = models.CharField(max_length=55, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["business", "-created_at"], name="delivery_business_recent"),
            # The API's list with its status filter, a page at a time newest first (portal.keyset):
            # led by the status, a rare one costs a page's rows, not a scan of the business's.
            models.Index(
                fields=["business", "status", "-created_at"], name="delivery_status_recent"
            ),
            models.Index(fields=["status", "next_attempt_at"], name="delivery_waiting"),
            models.Index(
                fields=["customer", "-created_at"],
                condition=models.Q(customer__isnull=False),
                name="delivery_customer_recent",
            ),
            models.Index(
                fields=["book_at"],
                condition=models.Q(book_at__isnull=False),
                name="delivery_to_book",
            ),
            # The per-business limits count only these rows (deliveries_limit_check): under
            # way, and booked ahead. However many finished deliveries a business has, the count
            # reads at most the limit's number of index entries.
            models.Index(
                fields=["business"],
                condition=~models.Q(status__in=["delivered", "cancelled", "failed"])
                & models.Q(book_at__isnull=True),
                name="delivery_business_held",
            ),
            models.Index(
                fields=["business"],
                condition=models.Q(status="requested", book_at__isnull=False),
                name="delivery_business_ahead",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(package_weight_kg__gt=0), name="delivery_weight_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"


class DeliveryEvent(models.Model):
    """One change of a delivery: its new status, when, and where the drone was."""

    # Indexed by event_delivery_at, which leads with it.
    delivery = models.ForeignKey(
        Delivery, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    status = models.CharField(max_length=24, choices=Delivery.Status.choices)
    at = models.DateTimeField()
    lat = models.FloatField(null=True, blank=True)
    lon = models.FloatField(null=True, blank=True)
    alt_m = models.FloatField(null=True, blank=True)
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["delivery", "at"], name="event_delivery_at")]

    def __str__(self) -> str:
        return f"{self.delivery_id} {self.status} at {self.at:%Y-%m-%d %H:%M:%S}"


class Quote(models.Model):
    """A priced, time-limited offer for a delivery as described in `request`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    business = models.ForeignKey(
        "businesses.Business", on_delete=models.CASCADE, related_name="quotes"
    )
    request = models.JSONField()
    price_amount = models.DecimalField(max_digits=10, decimal_places=2)
    price_currency = models.CharField(max_length=3)
    pickup_eta = models.DateTimeField()
    dropoff_eta = models.DateTimeField()
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"quote {self.id} {self.price_amount} {self.price_currency}"


class OutboxMessage(models.Model):
    """A workflow message the broker refused when it was first published (the broker was down).

    The relay on beat publishes it again until the broker takes it. The message's first record
    is the committed row it is about (a delivery in `requested`), which the sweeper republishes
    if the process died before even this row could be written; so an accepted request is never
    lost.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task = models.CharField(max_length=200)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    # The trace it was first published in: the relay publishes it again inside that trace.
    traceparent = models.CharField(max_length=55, blank=True, editable=False)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["published_at", "created_at"], name="outbox_pending")]

    def __str__(self) -> str:
        return f"{self.task} {self.payload}"


class IdempotencyRecord(models.Model):
    """The first answer to a POST with an `Idempotency-Key`, replayed for 24 hours."""

    business = models.ForeignKey("businesses.Business", on_delete=models.CASCADE)
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=300)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField()
    response_body = models.JSONField()
    response_headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["business", "key"], name="idempotency_key_unique")
        ]

    def __str__(self) -> str:
        return f"{self.key} → {self.response_status}"
