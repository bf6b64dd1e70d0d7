from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from audit.services import audited, form_changes
from webhooks import services
from webhooks.models import WebhookAttempt, WebhookEndpoint, WebhookMessage


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ["url", "business", "active", "failing_since", "disabled_at", "created_at"]
    list_filter = ["active"]
    search_fields = ["url", "business__name"]
    # The secrets never show: operators have no use for them, and pages get screenshotted.
    exclude = ["secret", "previous_secret"]
    # The URL and whether it is on change through the business's API only, which checks the
    # URL and, re-activating, clears `disabled_at`: edited here they would bypass both.
    readonly_fields = [
        "business", "url", "active", "previous_secret_until", "failing_since", "disabled_at",
    ]  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # businesses register endpoints through the API, which makes the secret

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        with audited(request, "webhook_endpoint.update", obj, form_changes(form)):
            super().save_model(request, obj, form, change)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        with audited(request, "webhook_endpoint.delete", obj):
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        with audited(request, "webhook_endpoint.delete", list(queryset)):
            super().delete_queryset(request, queryset)


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ["at", "status_code", "latency_ms", "error"]
    readonly_fields = ["at", "status_code", "latency_ms", "error"]
    extra = 0
    can_delete = False
    ordering = ["-at"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookMessage)
class WebhookMessageAdmin(admin.ModelAdmin):
    list_display = ["id", "type", "endpoint", "delivery_id", "status", "attempts", "created_at"]
    list_filter = ["status", "type"]
    search_fields = ["id", "delivery_id", "endpoint__url"]
    readonly_fields = [
        "id", "endpoint", "delivery_id", "type", "payload", "sequence", "status", "attempts",
        "next_attempt_at", "retry_until", "created_at",
    ]  # fmt: skip
    inlines = [WebhookAttemptInline]
    actions = ["resend"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Send the selected messages again (same webhook-id)")
    def resend(self, request: HttpRequest, queryset: QuerySet[WebhookMessage]) -> None:
        for message in queryset:
            with audited(request, "webhook_message.resend", message):
                services.webhook_message_resend(message_id=message.pk)
        self.message_user(request, f"{queryset.count()} message(s) queued", messages.SUCCESS)
