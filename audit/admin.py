"""The audit trail in admin: found by actor kind, action, object type, date and object id; never
added, changed or deleted here (every page is read-only)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from audit.models import AuditEntry


class ChoicesFilter(admin.SimpleListFilter):
    """A filter over the values a column holds (actions and object types are open-ended)."""

    field = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        values = AuditEntry.objects.order_by(self.field).values_list(self.field, flat=True)
        return [(value, value) for value in values.distinct()]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


class ActionFilter(ChoicesFilter):
    title = parameter_name = field = "action"


class TargetTypeFilter(ChoicesFilter):
    title = "object type"
    parameter_name = field = "target_type"


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["at", "actor_kind", "actor", "address", "action", "target_type", "target"]
    list_filter = ["actor_kind", ActionFilter, TargetTypeFilter, ("at", admin.DateFieldListFilter)]
    date_hierarchy = "at"
    search_fields = ["^target_id", "target_repr", "actor"]
    search_help_text = "An object's id (whole, or its start) or name, or who acted."
    show_full_result_count = False
    readonly_fields = [
        "at", "actor_kind", "actor", "actor_user", "business", "api_key_prefix", "address",
        "action", "target_type", "target_id", "target_repr", "changes",
    ]  # fmt: skip

    @admin.display(description="object", ordering="target_id")
    def target(self, entry: AuditEntry) -> str:
        return entry.target_repr or entry.target_id

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
