"""Operators' view of deliveries: find one, see its events, retry failed work, cancel."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from deliveries import services
from deliveries.lifecycle import InvalidStageTransition
from deliveries.models import Delivery, DeliveryEvent, IdempotencyRecord, OutboxMessage, Quote
from portal.errors import DomainError


class DeliveryEventInline(admin.TabularInline):
    model = DeliveryEvent
    fields = ("at", "status", "lat", "lon", "alt_m", "note")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "id", "business", "status", "drone", "package_weight_kg", "pickup_eta", "dropoff_eta",
        "attention", "failure_reason", "created_at",
    )  # fmt: skip
    list_filter = ("status", ("attention", admin.EmptyFieldListFilter), "business", "expedited")
    search_fields = ("id", "tracking_token", "recipient_name", "recipient_email", "package_tag")
    list_select_related = ("business", "drone")
    date_hierarchy = "created_at"
    inlines = [DeliveryEventInline]
    actions = ["retry_failed", "cancel", "mark_failed"]
    readonly_fields = [f.name for f in Delivery._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # deliveries come in through the API, which enforces every rule

    @admin.action(description="Retry the selected failed deliveries")
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        self._each(
            request, queryset, lambda d: services.delivery_retry(delivery_id=d.id), "retried"
        )

    @admin.action(description="Cancel the selected deliveries (before pickup)")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        self._each(
            request,
            queryset,
            lambda d: services.delivery_cancel(business_id=d.business_id, delivery_id=d.id),
            "cancelled",
        )

    @admin.action(description="Mark the selected deliveries failed (releases their drones)")
    def mark_failed(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        def fail(delivery: Delivery) -> None:
            if not services.delivery_fail(delivery_id=delivery.id, reason="failed by operator"):
                raise InvalidStageTransition(f"a {delivery.status} delivery cannot fail")

        self._each(request, queryset, fail, "marked failed")

    def _each(
        self, request: HttpRequest, queryset: QuerySet[Delivery], act: Any, verb: str
    ) -> None:
        done = 0
        for delivery in queryset:
            try:
                act(delivery)
                done += 1
            except DomainError as exc:
                self.message_user(request, f"{delivery.id}: {exc.message}", messages.WARNING)
        self.message_user(request, f"{done} deliveries {verb}", messages.SUCCESS)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = ("task", "created_at", "published_at", "attempts", "last_error")
    list_filter = (("published_at", admin.EmptyFieldListFilter),)
    readonly_fields = ("task", "payload", "created_at", "published_at", "attempts", "last_error")


@admin.register(Quote)
class QuoteAdmin(admin.ModelAdmin):
    list_display = ("id", "business", "price_amount", "price_currency", "expires_at")
    list_filter = ("business",)


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ("key", "business", "method", "path", "response_status", "created_at")
    search_fields = ("key",)
