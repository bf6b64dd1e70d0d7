"""The customer and business pages of the site (server-rendered; JavaScript only for the map).

Every action calls the same services as the API, so the same rules and limits hold; every read
of deliveries starts from `customers.deliveries_visible_to`.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from airspace.selectors import zones_active
from audit.services import audited
from businesses.models import BusinessAPIKey
from businesses.services import api_key_create, api_key_revoke
from deliveries import live
from deliveries import services as delivery_services
from deliveries.lifecycle import BEFORE_PICKUP, FINISHED
from deliveries.models import Delivery
from deliveries.reasons import customer_reason
from deliveries.views import STAGE_LABELS
from portal import customers, keyset
from portal.errors import Conflict, DomainError, NotFound
from portal.forms import ApiKeyForm, ScheduleForm, SignUpForm
from portal.limits import FailureWindow, client_address
from portal.places import KNOWN_PLACES

PAGE_SIZE = 20


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/home.html", {"nav": "home"})


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """`/favicon.ico`, which browsers ask for on pages that name no icon (the admin, the API
    docs): the site's icon, a static file. A temporary redirect: in production the file's name
    carries its hash (the manifest storage), so a permanent one would outlive the next icon."""
    return HttpResponseRedirect(static("portal/favicon.svg"))


@require_GET
def track_lookup(request: HttpRequest) -> HttpResponse:
    """The home page's "track a delivery" box: a tracking link or its token."""
    text = request.GET.get("link", "").strip().rstrip("/")
    token = text.rsplit("/track/", 1)[-1] if "/track/" in text else text
    if token and all(c.isalnum() or c in "-_" for c in token):
        return redirect("track", token=token)
    messages.error(request, "Paste the tracking link from your email or from the business.")
    return redirect("home")


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("site-deliveries")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = customers.customer_signup(
                email=form.cleaned_data["email"], password=form.cleaned_data["password1"]
            )
        except DomainError as exc:
            form.add_error("email", exc.message[:1].upper() + exc.message[1:] + ".")
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, "Welcome! Your account is ready: schedule your first pickup.")
            return redirect("site-schedule")
    return render(request, "portal/signup.html", {"form": form, "nav": "signup"})


@login_required
@require_GET
def deliveries_list(request: HttpRequest) -> HttpResponse:
    member = customers.membership_of(request.user)
    deliveries = customers.deliveries_visible_to(request.user)
    stage = request.GET.get("stage", "")
    if stage in Delivery.Status.values:
        deliveries = deliveries.filter(status=stage)
    page = keyset.page_or_first(deliveries, cursor=request.GET.get("cursor"), size=PAGE_SIZE)
    rows = [
        {
            "delivery": d,
            "stage": STAGE_LABELS.get(d.status, d.status),
            "eta": d.dropoff_eta if d.status not in FINISHED else None,
        }
        for d in page.items
    ]
    context = {
        "nav": "deliveries",
        "member": member,
        "page": page,
        "rows": rows,
        "stage": stage,
        "stages": [(value, STAGE_LABELS.get(value, value)) for value in Delivery.Status.values],
    }
    return render(request, "portal/deliveries.html", context)


def _delivery_or_404(request: HttpRequest, delivery_id: str) -> Delivery:
    try:
        return customers.site_delivery_get(user=request.user, delivery_id=UUID(delivery_id))
    except (ValueError, NotFound):
        raise Http404("no such delivery") from None


@login_required
@require_GET
def delivery_detail(request: HttpRequest, delivery_id: str) -> HttpResponse:
    delivery = _delivery_or_404(request, delivery_id)
    status = live.status_read(delivery.id) or live.status_of(delivery)
    events = sorted(delivery.events.all(), key=lambda e: (e.at, e.id))
    context = {
        "nav": "deliveries",
        "delivery": delivery,
        "stage": STAGE_LABELS.get(delivery.status, delivery.status),
        "live": status,
        "timeline": [
            {"label": STAGE_LABELS.get(e.status, e.status), "at": e.at, "status": e.status}
            for e in events
        ],
        "can_cancel": delivery.status in BEFORE_PICKUP,
        "failure": customer_reason(delivery.failure_reason) if delivery.failure_reason else None,
        "track_url": reverse("track", kwargs={"token": delivery.tracking_token}),
        "public_track_url": f"{settings.PUBLIC_BASE_URL}/track/{delivery.tracking_token}",
        "member": customers.membership_of(request.user),
    }
    return render(request, "portal/delivery.html", context)


@login_required
@require_POST
def delivery_cancel(request: HttpRequest, delivery_id: str) -> HttpResponse:
    delivery = _delivery_or_404(request, delivery_id)
    try:
        with audited(request, "delivery.cancel", (Delivery, delivery.id)):
            customers.site_delivery_cancel(user=request.user, delivery_id=delivery.id)
    except Conflict:
        messages.error(
            request, "The package has been picked up already, so it can no longer be cancelled."
        )
    else:
        messages.success(request, "The delivery is cancelled. You will not be charged.")
    return redirect("site-delivery", delivery_id=delivery.id)


def _map_context() -> dict[str, Any]:
    zones = [{"name": z.name, "geometry": z.geometry} for z in zones_active(start=timezone.now())]
    return {
        "map_config": {
            "center": [*settings.SITE_MAP_CENTER],
            "tiles": settings.MAP_TILE_URL,
            "attribution": settings.MAP_TILE_ATTRIBUTION,
            "zones": zones,
            "places": [
                {"slug": p.slug, "name": p.name, "lat": p.lat, "lon": p.lon} for p in KNOWN_PLACES
            ],
        }
    }


@login_required
@require_http_methods(["GET", "POST"])
def schedule(request: HttpRequest) -> HttpResponse:
    """Choose the places, the package and the time; see the quote; confirm."""
    if customers.membership_of(request.user) is not None:
        messages.info(request, "Businesses schedule deliveries through the API with their keys.")
        return redirect("site-keys")
    form = ScheduleForm(request.POST or None)
    context: dict[str, Any] = {"nav": "schedule", "form": form, **_map_context()}
    if request.method != "POST" or not form.is_valid() or request.POST.get("action") == "edit":
        return render(request, "portal/schedule.html", context)
    business = customers.customers_business()
    delivery_request = form.delivery_request()
    if request.POST.get("action") == "confirm" and request.POST.get("quote_id"):
        try:
            delivery = delivery_services.delivery_create(
                business_id=business.id,
                request=delivery_request,
                quote_id=UUID(request.POST["quote_id"]),
                customer_id=request.user.pk,
            )
        except ValueError:
            pass  # a mangled quote id: quote again below
        except DomainError as exc:
            if exc.code not in ("quote_expired", "quote_mismatch", "unknown_quote"):
                form.add_service_error(exc)
                return render(request, "portal/schedule.html", context, status=422)
            messages.warning(request, "That quote had expired; here is a new one.")
        else:
            messages.success(request, "Your pickup is scheduled. Follow it here.")
            return redirect("site-delivery", delivery_id=delivery.id)
    try:
        quote = delivery_services.quote_create(business_id=business.id, request=delivery_request)
    except DomainError as exc:
        form.add_service_error(exc)
        return render(request, "portal/schedule.html", context, status=422)
    context.update(quote=quote, request_summary=delivery_request)
    return render(request, "portal/quote.html", context)


def _member_or_404(request: HttpRequest) -> customers.BusinessMember:
    member = customers.membership_of(request.user)
    if member is None:
        raise Http404("only business members manage API keys")
    return member


@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest) -> HttpResponse:
    """A business member's API keys: create one (shown once), revoke one."""
    member = _member_or_404(request)
    form = ApiKeyForm(request.POST or None)
    new_key = None
    if request.method == "POST" and form.is_valid():
        with audited(request, "api_key.create") as audit:
            key, new_key = api_key_create(business=member.business, name=form.cleaned_data["name"])
            audit.target = (BusinessAPIKey, key.prefix, key.name)
        form = ApiKeyForm()
    keys = BusinessAPIKey.objects.filter(business=member.business).order_by("-created")
    context = {"nav": "keys", "member": member, "form": form, "keys": keys, "new_key": new_key}
    return render(request, "portal/api_keys.html", context)


@login_required
@require_POST
def api_key_revoke_view(request: HttpRequest, prefix: str) -> HttpResponseRedirect:
    member = _member_or_404(request)
    try:
        with audited(request, "api_key.revoke", (BusinessAPIKey, prefix)):
            key = api_key_revoke(business=member.business, prefix=prefix)
    except NotFound:
        raise Http404("no such key") from None
    messages.success(
        request, f"The key “{key.name}” ({key.prefix}…) is revoked: it stops working now."
    )
    return redirect("site-keys")


class PasswordResetView(auth_views.PasswordResetView):
    """Django's, with the link in the email on the address the site is served at
    (PUBLIC_BASE_URL), not whatever Host the request came with; and throttled, since each
    request may send an email (portal/limits.py windows, in Redis).

    Past PASSWORD_RESET_RATE_LIMIT requests from one client address: 429 with Retry-After, the
    form still there and the message saying when to try again. Past
    PASSWORD_RESET_EMAIL_RATE_LIMIT requests for one email address, whoever asks: nothing more
    is sent to it, and the answer is the usual "check your email", as for an address without an
    account. Every address asked for is counted, account or not, and what the asker sees never
    depends on the address: not on its account, nor on who else asked for it lately.
    """

    template_name = "portal/password_reset.html"
    email_template_name = "portal/password_reset_email.txt"
    subject_template_name = "portal/password_reset_subject.txt"

    def form_valid(self, form: Any) -> HttpResponse:
        address = FailureWindow.of(
            "reset-address", client_address(self.request), setting="PASSWORD_RESET_RATE_LIMIT"
        )
        if not address.take():
            retry_after = address.retry_after()
            minutes = max(1, round(retry_after / 60))
            form.add_error(
                None,
                "Too many password reset requests from your network. "
                f"Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
            )
            response = self.render_to_response(
                self.get_context_data(form=form), status=HTTPStatus.TOO_MANY_REQUESTS
            )
            response["Retry-After"] = str(retry_after)
            return response
        email = str(form.cleaned_data["email"]).strip().lower()
        mailbox = FailureWindow.of("reset-email", email, setting="PASSWORD_RESET_EMAIL_RATE_LIMIT")
        if not mailbox.take():
            return HttpResponseRedirect(self.get_success_url())
        protocol, _, domain = settings.PUBLIC_BASE_URL.partition("://")
        self.extra_email_context = {"protocol": protocol, "domain": domain}
        return super().form_valid(form)
