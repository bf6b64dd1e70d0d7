"""Operators' view of businesses, their API keys and members, and of customers.

Creating, deactivating and revoking go through businesses.services, which drop the keys' cached
entries: a deactivated business or a revoked key is refused from the very next API call.
Nothing is deleted here (deliveries keep a reference to their business); deactivate or revoke.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.translation import ngettext
from rest_framework_api_key.admin import APIKeyModelAdmin

from audit.services import actor_of, audit_record, audited, form_changes
from businesses.models import Business, BusinessAPIKey, BusinessMember
from businesses.services import (
    api_key_forget,
    api_key_revoke,
    business_activate,
    business_create,
    business_deactivate,
    business_update,
)

User = get_user_model()


class APIKeyInline(admin.TabularInline):
    model = BusinessAPIKey
    fields = ("prefix", "name", "created", "expiry_date", "revoked")
    readonly_fields = ("prefix", "name", "created", "expiry_date", "revoked")
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are made on the API key page, which shows the key once


class BusinessMemberInline(admin.TabularInline):
    """The people who sign in to the site for the business (a user belongs to one at most)."""

    model = BusinessMember
    fields = ("user", "created_at")
    readonly_fields = ("created_at",)
    autocomplete_fields = ("user",)
    extra = 0
    verbose_name_plural = "members (people who sign in to the site for it)"


@admin.register(Business)
class BusinessAdmin(admin.ModelAdmin):
    list_display = ("name", "email", "is_active", "keys", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name", "email")
    fields = ("name", "email", "is_active")
    inlines = [BusinessMemberInline, APIKeyInline]
    actions = ["deactivate", "activate"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Business]:
        return super().get_queryset(request).annotate(key_count=Count("api_keys"))

    @admin.display(description="API keys", ordering="key_count")
    def keys(self, business: Business) -> int:
        return getattr(business, "key_count", 0)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # its deliveries refer to it: deactivate it instead

    def save_model(self, request: HttpRequest, obj: Business, form: Any, change: bool) -> None:
        data = form.cleaned_data
        action = "update" if change else "create"
        if change and "is_active" in form.changed_data:
            action = "activate" if data["is_active"] else "deactivate"
        with audited(request, f"business.{action}", changes=form_changes(form)) as audit:
            if change:
                business = business_update(
                    business_id=obj.pk, name=data["name"], email=data["email"]
                )
            else:
                business, key = business_create(name=data["name"], email=data["email"])
                messages.warning(
                    request,
                    f"The API key of {business.name} is: {key}. Give it to the business now: it "
                    "is not shown again.",
                )
                audit_record(
                    actor=actor_of(request),
                    action="api_key.create",
                    target=(BusinessAPIKey, key.partition(".")[0], "default"),
                    changes={"business": str(business.pk)},
                    request=request,
                )
            if data["is_active"] != business.is_active:
                toggle = business_activate if data["is_active"] else business_deactivate
                business = toggle(business_id=business.pk)
            audit.target = business
        # The admin goes on with `obj` (its inlines, history entry and redirect).
        obj.pk, obj.created_at, obj.is_active = business.pk, business.created_at, business.is_active
        obj._state.adding, obj._state.db = False, business._state.db

    @admin.action(description="Deactivate the selected businesses (their API keys stop at once)")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[Business]) -> None:
        count = 0
        for business_id, name in queryset.values_list("pk", "name"):
            with audited(request, "business.deactivate", (Business, business_id, name)):
                business_deactivate(business_id=business_id)
            count += 1
        self.message_user(
            request,
            ngettext(
                "%(count)d business deactivated: its API keys are refused from the next call.",
                "%(count)d businesses deactivated: their API keys are refused from the next call.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )

    @admin.action(description="Activate the selected businesses")
    def activate(self, request: HttpRequest, queryset: QuerySet[Business]) -> None:
        count = 0
        for business_id, name in queryset.values_list("pk", "name"):
            with audited(request, "business.activate", (Business, business_id, name)):
                business_activate(business_id=business_id)
            count += 1
        self.message_user(
            request,
            ngettext(
                "%(count)d business activated: its API keys that are not revoked work again.",
                "%(count)d businesses activated: their API keys that are not revoked work again.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )


@admin.register(BusinessAPIKey)
class BusinessAPIKeyAdmin(APIKeyModelAdmin):
    list_display = (*APIKeyModelAdmin.list_display, "business")  # type: ignore[assignment]
    list_filter = ("business", "revoked")  # type: ignore[assignment]
    search_fields = ("name", "prefix", "business__name")  # type: ignore[assignment]
    list_select_related = ("business",)
    autocomplete_fields = ("business",)
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        # A key stays with the business it was given to.
        return (*fields, "business") if obj is not None else fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke it instead: the record says who had it

    def save_model(
        self, request: HttpRequest, obj: Any, form: Any = None, change: bool = False
    ) -> None:
        revoked = change and form is not None and "revoked" in form.changed_data and obj.revoked
        action = "revoke" if revoked else "update" if change else "create"
        changes = form_changes(form) if form is not None else {}
        with audited(request, f"api_key.{action}", changes=changes) as audit:
            self._save(request, obj, form, change, revoked=revoked)
            audit.target = (BusinessAPIKey, obj.prefix, obj.name)

    def _save(
        self, request: HttpRequest, obj: Any, form: Any, change: bool, *, revoked: bool
    ) -> None:
        if revoked:
            obj.revoked = False  # the service revokes it (and says so at once)
            super().save_model(request, obj, form, change)
            api_key_revoke(business=obj.business, prefix=obj.prefix)
            obj.revoked = True
            return
        super().save_model(request, obj, form, change)
        if change:
            api_key_forget(obj.prefix)  # a new expiry date holds from the next call

    @admin.action(description="Revoke the selected API keys (refused from the next call)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[BusinessAPIKey]) -> None:
        count = 0
        for api_key in queryset.select_related("business"):
            with audited(request, "api_key.revoke", (BusinessAPIKey, api_key.prefix, api_key.name)):
                api_key_revoke(business=api_key.business, prefix=api_key.prefix)
            count += 1
        self.message_user(
            request,
            ngettext(
                "%(count)d API key revoked: it is refused from the next call.",
                "%(count)d API keys revoked: they are refused from the next call.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )


# --- people: customers and business members -----------------------------------------------


class MembershipInline(admin.StackedInline):
    model = BusinessMember
    fields = ("business",)
    autocomplete_fields = ("business",)
    extra = 0
    max_num = 1
    verbose_name_plural = "business (empty for a customer)"


class KindFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("customer", "customers"), ("member", "business members"), ("staff", "staff")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        match self.value():
            case "customer":
                return queryset.filter(business_membership__isnull=True, is_staff=False)
            case "member":
                return queryset.filter(business_membership__isnull=False)
            case "staff":
                return queryset.filter(is_staff=True)
        return queryset


if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class PersonAdmin(UserAdmin):
    """Django's users, told apart: customers (no business), business members and staff. An
    inactive user is signed out at their next request."""

    list_display = ("username", "email", "first_name", "last_name", "is_active", "business")
    list_filter = (KindFilter, "is_active", "is_staff", "is_superuser")
    list_select_related = ("business_membership__business",)
    inlines = [MembershipInline]

    @admin.display(description="business", ordering="business_membership__business__name")
    def business(self, user: Any) -> str:
        membership = getattr(user, "business_membership", None)
        return membership.business.name if membership else "-"
