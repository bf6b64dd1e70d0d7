"""Operators' view of deliveries: find one, see its events, retry failed work, cancel.

Every change goes through the services and the lifecycle (the same rules as the API), and is
recorded under the operator's name. Nothing here deletes a delivery that is not finished: one
that holds a drone would leave the drone booked for ever.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from uuid import UUID

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.db.models import CharField, QuerySet, Value
from django.db.models.functions import Cast, Replace
from django.db.models.lookups import Contains
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from audit.services import audited
from deliveries import services
from deliveries.lifecycle import FINISHED, WITH_DRONE, InvalidStageTransition
from deliveries.models import Delivery, DeliveryEvent, IdempotencyRecord, OutboxMessage, Quote
from portal.errors import DomainError

Status = Delivery.Status
# Part of a delivery id as an operator may type it: hex digits, with or without the dashes.
ID_FRAGMENT = re.compile(r"[0-9a-f-]{4,36}")


def operator_name(request: HttpRequest) -> str:
    return request.user.get_username()


def delivery_link(delivery_id: UUID) -> SafeString:
    """A link to the delivery's page, named by the start of its id (enough to search for)."""
    url = reverse("admin:deliveries_delivery_change", args=[quote(delivery_id)])
    return format_html('<a href="{}">{}</a>', url, str(delivery_id)[:8])


class DeliveryEventInline(admin.TabularInline):
    """The timeline: every change of stage and every flag, oldest first, where the drone was."""

    model = DeliveryEvent
    fields = ("at", "status", "position", "note")
    readonly_fields = fields
    ordering = ("at", "id")
    extra = 0
    can_delete = False
    verbose_name = "event"
    verbose_name_plural = "timeline"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="drone position")
    def position(self, event: DeliveryEvent) -> str:
        if event.lat is None or event.lon is None:
            return "-"
        altitude = f", {event.alt_m:.0f} m up" if event.alt_m else ""
        return f"{event.lat:.5f}, {event.lon:.5f}{altitude}"


class FailedDeliveryForm(forms.ModelForm):
    """A failed delivery's deadline, the one thing an operator may change (to retry it)."""

    class Meta:
        model = Delivery
        fields = ["deadline"]
        help_texts = {
            "deadline": "Move it ahead (or clear it) so that a retry does not fail at once."
        }

    def clean_deadline(self) -> Any:
        deadline = self.cleaned_data.get("deadline")
        try:
            services.delivery_deadline_check(self.instance, deadline, now=timezone.now())
        except DomainError as exc:
            raise forms.ValidationError(exc.message) from exc
        return deadline


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "short_id", "business", "status", "drone", "package_weight_kg", "dropoff_eta",
        "deadline", "attention", "failure_reason", "created_at",
    )  # fmt: skip
    list_filter = ("status", ("attention", admin.EmptyFieldListFilter), "business", "expedited")
    # A whole id is found by its key; part of one in search_results below; a tracking link or
    # token by the token's unique index.
    search_fields = ("=tracking_token", "recipient_name", "recipient_email", "package_tag")
    search_help_text = (
        "A delivery id (whole or part), a tracking link or token, a recipient, or a package tag."
    )
    list_select_related = ("business", "drone")
    date_hierarchy = "created_at"

    @admin.display(description="delivery", ordering="id")
    def short_id(self, delivery: Delivery) -> str:
        """The id's first block, as operators read it out; the search takes it too."""
        return f"{str(delivery.id)[:8]}…"

    show_full_result_count = False
    inlines = [DeliveryEventInline]
    actions = ["retry_failed", "cancel", "mark_failed"]
    readonly_fields = [f.name for f in Delivery._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # deliveries come in through the API, which enforces every rule

    # --- finding one --------------------------------------------------------------------------

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Delivery], search_term: str
    ) -> tuple[QuerySet[Delivery], bool]:
        term = search_term.strip()
        if "/track/" in term:  # a tracking link pasted whole
            term = term.rstrip("/").rsplit("/", 1)[-1]
        try:
            return queryset.filter(pk=UUID(term)), False
        except ValueError:
            pass
        found, duplicates = super().get_search_results(request, queryset, term)
        fragment = term.lower()
        if ID_FRAGMENT.fullmatch(fragment):
            # Compared without dashes: SQLite keeps a UUID as 32 hex digits, PostgreSQL's text
            # form has dashes, and an operator may type it either way.
            bare = Replace(Cast("id", CharField()), Value("-"), Value(""))
            found = found | queryset.filter(Contains(bare, fragment.replace("-", "")))
        return found, duplicates

    # --- what may change ----------------------------------------------------------------------

    def get_readonly_fields(self, request: HttpRequest, obj: Delivery | None = None) -> Any:
        if obj is not None and obj.status == Status.FAILED:
            return [name for name in self.readonly_fields if name != "deadline"]
        return self.readonly_fields

    def get_form(
        self, request: HttpRequest, obj: Delivery | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is not None and obj.status == Status.FAILED:
            kwargs["form"] = FailedDeliveryForm
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request: HttpRequest, obj: Delivery, form: Any, change: bool) -> None:
        if change and "deadline" in form.changed_data:
            deadlines = [form.initial.get("deadline"), form.cleaned_data["deadline"]]
            with audited(
                request, "delivery.deadline_set", (Delivery, obj.pk), {"deadline": deadlines}
            ):
                services.delivery_deadline_set(
                    delivery_id=obj.pk,
                    deadline=form.cleaned_data["deadline"],
                    operator=operator_name(request),
                )

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # it would delete deliveries holding drones
        return actions

    def has_delete_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        if obj is not None and obj.status not in FINISHED:
            return False
        return super().has_delete_permission(request, obj)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        delivery = self.get_object(request, object_id)
        if delivery is not None and delivery.status not in FINISHED:
            holds = (
                f" and holds drone {delivery.drone.serial}"
                if delivery.status in WITH_DRONE and delivery.drone
                else ""
            )
            self.message_user(
                request,
                f"Delivery {delivery.pk} is {delivery.status.replace('_', ' ')}{holds}; it "
                "cannot be deleted until it is finished. Cancel it instead (possible until "
                "pickup).",
                messages.ERROR,
            )
            return HttpResponseRedirect(
                reverse("admin:deliveries_delivery_change", args=[quote(delivery.pk)])
            )
        return super().delete_view(request, object_id, extra_context)

    # --- actions ------------------------------------------------------------------------------

    @admin.action(description="Retry the selected failed deliveries")
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        operator = operator_name(request)
        done = self._each(
            request,
            queryset,
            lambda d: services.delivery_retry(delivery_id=d.pk, operator=operator),
            refused="not retried",
            action="delivery.retry",
        )
        if done:
            self.message_user(
                request,
                ngettext(
                    "%(count)d delivery sent back to the workflow: requested again, it gets the "
                    "first suitable drone that is free.",
                    "%(count)d deliveries sent back to the workflow: requested again, each gets "
                    "the first suitable drone that is free.",
                    done,
                )
                % {"count": done},
                messages.SUCCESS,
            )

    @admin.action(description="Cancel the selected deliveries (before pickup)")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        note = f"cancelled by operator {operator_name(request)}"

        def cancel_one(delivery: Delivery) -> None:
            if delivery.status == Status.CANCELLED:
                raise InvalidStageTransition("it was already cancelled")
            services.delivery_cancel(
                business_id=delivery.business_id, delivery_id=delivery.pk, note=note
            )

        done = self._each(
            request, queryset, cancel_one, refused="not cancelled", action="delivery.cancel"
        )
        if done:
            self.message_user(
                request,
                ngettext(
                    "%(count)d delivery cancelled; its drone, if it had one, is released.",
                    "%(count)d deliveries cancelled; their drones, if they had any, are released.",
                    done,
                )
                % {"count": done},
                messages.SUCCESS,
            )

    @admin.action(description="Mark the selected deliveries failed (releases their drones)")
    def mark_failed(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        reason = f"failed by operator {operator_name(request)}"

        def fail(delivery: Delivery) -> None:
            if not services.delivery_fail(delivery_id=delivery.pk, reason=reason):
                raise InvalidStageTransition(
                    f"a {delivery.status.replace('_', ' ')} delivery cannot fail"
                )

        done = self._each(
            request, queryset, fail, refused="not marked failed", action="delivery.fail"
        )
        if done:
            self.message_user(
                request,
                ngettext(
                    "%(count)d delivery marked failed.", "%(count)d deliveries marked failed.", done
                )
                % {"count": done},
                messages.SUCCESS,
            )

    def _each(
        self,
        request: HttpRequest,
        queryset: QuerySet[Delivery],
        act: Callable[[Delivery], Any],
        *,
        refused: str,
        action: str,
    ) -> int:
        """Act on each delivery, audited; a refused one is reported with the service's reason."""
        done = 0
        for delivery in queryset.select_related("drone"):
            try:
                with audited(request, action, (Delivery, delivery.pk), {"from": delivery.status}):
                    act(delivery)
            except DomainError as exc:
                self.message_user(
                    request,
                    format_html(
                        "Delivery {} {}: {}.", delivery_link(delivery.pk), refused, exc.message
                    ),
                    messages.WARNING,
                )
            else:
                done += 1
        return done

    # --- the change page's buttons ------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        retry = path(
            "<path:object_id>/retry/",
            self.admin_site.admin_view(self.retry_view),
            name="deliveries_delivery_retry",
        )
        return [retry, *super().get_urls()]

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return require_POST(self._retry_one)(request, object_id)

    def _retry_one(self, request: HttpRequest, object_id: str) -> HttpResponse:
        delivery = self.get_object(request, object_id)
        if delivery is None or not self.has_change_permission(request, delivery):
            return HttpResponse("No such delivery, or not yours to change.", status=404)
        self.retry_failed(request, Delivery.objects.filter(pk=delivery.pk))
        return HttpResponseRedirect(
            reverse("admin:deliveries_delivery_change", args=[quote(delivery.pk)])
        )


def _failed_deliveries_in_index(site: admin.AdminSite) -> None:
    """Failed deliveries get a line of their own under Deliveries, in the index and the sidebar:
    the changelist filtered to them, with their reasons and the retry action."""
    build = site.get_app_list

    def get_app_list(request: HttpRequest, app_label: str | None = None) -> list[Any]:
        apps = build(request, app_label)
        for app in apps:
            if app["app_label"] != "deliveries":
                continue
            for index, model in enumerate(app["models"]):
                if model["object_name"] == "Delivery" and model.get("admin_url"):
                    failed = {
                        **model,
                        "name": "Failed deliveries",
                        "object_name": "FailedDelivery",
                        "admin_url": f"{model['admin_url']}?status__exact={Status.FAILED}",
                        "add_url": None,
                    }
                    app["models"].insert(index + 1, failed)
                    break
        return apps

    site.get_app_list = get_app_list  # type: ignore[method-assign]


_failed_deliveries_in_index(admin.site)


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
