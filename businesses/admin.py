from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from rest_framework_api_key.admin import APIKeyModelAdmin

from businesses.models import Business, BusinessAPIKey
from businesses.services import api_key_forget


class APIKeyInline(admin.TabularInline):
    model = BusinessAPIKey
    fields = ("prefix", "name", "created", "expiry_date", "revoked")
    readonly_fields = ("prefix", "name", "created", "expiry_date", "revoked")
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are made on the API key page, which shows the key once


@admin.register(Business)
class BusinessAdmin(admin.ModelAdmin):
    list_display = ("name", "email", "is_active", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name", "email")
    inlines = [APIKeyInline]


@admin.register(BusinessAPIKey)
class BusinessAPIKeyAdmin(APIKeyModelAdmin):
    list_display = (*APIKeyModelAdmin.list_display, "business")  # type: ignore[assignment]
    list_filter = ("business", "revoked")  # type: ignore[assignment]
    search_fields = ("name", "prefix", "business__name")  # type: ignore[assignment]

    def save_model(
        self, request: HttpRequest, obj: Any, form: Any = None, change: bool = False
    ) -> None:
        super().save_model(request, obj, form, change)
        api_key_forget(obj.prefix)  # a revocation takes effect at once
