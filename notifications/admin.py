"""Operators' view of the stage emails: what was sent to whom, what waits, and why it failed."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from notifications.models import Notification, Subscription
from notifications.services import subscription_unsubscribe


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("created_at", "delivery", "kind", "email", "status", "attempts", "sent_at")
    list_filter = ("status", "kind")
    search_fields = ("delivery__id", "email")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Notification._meta.fields]
    actions = ["send_again"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Send again now (failed or waiting ones)")
    def send_again(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        # Back to pending and due: the sweep sends them within its round.
        count = queryset.filter(status__in=["pending", "failed"]).update(
            status="pending", next_attempt_at=timezone.now(), last_error="", attempts=0
        )
        messages.info(request, f"{count} email(s) will be sent within a minute.")


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ("created_at", "delivery", "email", "source", "active")
    list_filter = ("source", "active")
    search_fields = ("delivery__id", "email")
    # Not the token: it is what the unsubscribe link carries.
    readonly_fields = [f.name for f in Subscription._meta.fields if f.name != "token"]
    exclude = ("token",)
    actions = ["unsubscribe"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Unsubscribe")
    def unsubscribe(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        for subscription in queryset:
            subscription_unsubscribe(subscription=subscription)
        messages.info(request, f"{queryset.count()} unsubscribed.")
