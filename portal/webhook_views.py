"""A business's webhook endpoints on the site: add, change, rotate the secret, delete, and every
attempt to send an event, with a resend.

Every write calls the webhooks services, as `/api/v1/webhooks` does, so the same rules hold
(https only in production, no private addresses, known events); every read is scoped to the
signed-in member's business, and another business's endpoint is a 404.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import OuterRef, Subquery
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from audit.services import audited
from businesses.models import BusinessMember
from portal import customers, keyset
from portal.errors import DomainError, NotFound
from portal.webhook_forms import EVENT_LABELS, WebhookEndpointForm, endpoint_initial
from webhooks import services
from webhooks.models import WebhookAttempt, WebhookEndpoint, WebhookMessage

ATTEMPTS_PAGE_SIZE = 25


def _member_or_404(request: HttpRequest) -> BusinessMember:
    member = customers.membership_of(request.user)
    if member is None:
        raise Http404("only business members manage webhooks")
    return member


def _endpoint_or_404(member: BusinessMember, endpoint_id: str) -> WebhookEndpoint:
    try:
        return services.webhook_endpoint_get(
            business_id=member.business_id, endpoint_id=UUID(endpoint_id)
        )
    except (ValueError, NotFound):
        raise Http404("no such webhook endpoint") from None


def _state(endpoint: WebhookEndpoint) -> tuple[str, str]:
    """(label, badge style) of an endpoint."""
    if endpoint.disabled_at is not None:
        return "Disabled", "failed"
    if not endpoint.active:
        return "Paused", "cancelled"
    if endpoint.failing_since is not None:
        return "Failing", "failed"
    return "Active", "delivered"


# What kept an attempt from an answer (the sender records the kind of error only, since its text
# may carry the URL), in a business's words.
ERROR_WORDS = {
    "NameResolutionError": "Your host's name could not be found.",
    "NewConnectionError": "Nothing accepted the connection at that address and port.",
    "ConnectTimeoutError": "The connection was not accepted in time.",
    "ReadTimeoutError": "Your receiver did not answer in time.",
    "TimeoutError": "Your receiver did not answer in time.",
    "SSLError": "The secure connection failed: is the certificate valid for this host?",
    "ProtocolError": "The connection was closed before an answer came.",
}


def _result(attempt: WebhookAttempt | None) -> dict[str, Any] | None:
    """How an attempt went: the receiver's HTTP status, or what kept us from one, in words."""
    if attempt is None:
        return None
    code, at = attempt.status_code, attempt.at
    if code is not None:
        return {"ok": 200 <= code < 300, "label": f"HTTP {code}", "words": "", "kind": "", "at": at}
    error = attempt.error
    if error.startswith("refused: "):
        reason = error.removeprefix("refused: ")
        return {
            "ok": False,
            "label": "Not sent",
            "words": reason[:1].upper() + reason[1:] + ".",
            "kind": "",
            "at": at,
        }
    return {
        "ok": False,
        "label": "No answer",
        "words": ERROR_WORDS.get(error, ""),
        "kind": error,
        "at": at,
    }


@login_required
@require_http_methods(["GET", "POST"])
def webhooks(request: HttpRequest) -> HttpResponse:
    """The business's endpoints, and a form to add one (its signing secret shown once)."""
    member = _member_or_404(request)
    form = WebhookEndpointForm(request.POST or None, initial={"active": True})
    created = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                with audited(request, "webhook_endpoint.create", changes=data) as audit:
                    created = audit.target = services.webhook_endpoint_create(
                        business_id=member.business_id,
                        url=data["url"],
                        events=data["events"],
                        active=data["active"],
                        description=data["description"],
                    )
            except DomainError as exc:
                form.add_service_error(exc)
                status = 422
            else:
                form = WebhookEndpointForm(initial={"active": True})
        else:
            status = 422
    last_attempt = (
        WebhookAttempt.objects.filter(endpoint=OuterRef("pk")).order_by("-at", "-id").values("id")
    )
    endpoints = list(
        WebhookEndpoint.objects.filter(business_id=member.business_id)
        .annotate(last_attempt_id=Subquery(last_attempt[:1]))
        .order_by("-created_at", "id")
    )
    attempts = WebhookAttempt.objects.in_bulk(
        [e.last_attempt_id for e in endpoints if e.last_attempt_id is not None]
    )
    rows = [
        {
            "endpoint": e,
            "state": _state(e),
            "last": _result(attempts.get(e.last_attempt_id)),
        }
        for e in endpoints
    ]
    context = {
        "nav": "webhooks",
        "member": member,
        "form": form,
        "rows": rows,
        "created": created,
        "event_labels": EVENT_LABELS,
    }
    return render(request, "portal/webhooks.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def webhook_detail(request: HttpRequest, endpoint_id: str) -> HttpResponse:
    """One endpoint: change it (action=save), rotate its secret (action=rotate, the new one shown
    once), and its attempts, newest first, each event with a resend."""
    member = _member_or_404(request)
    endpoint = _endpoint_or_404(member, endpoint_id)
    action = request.POST.get("action", "save")
    form = WebhookEndpointForm(
        request.POST if request.method == "POST" and action == "save" else None,
        initial=endpoint_initial(endpoint),
    )
    rotated = None
    status = 200
    if request.method == "POST" and action == "rotate":
        with audited(request, "webhook_endpoint.rotate", endpoint):
            rotated = services.webhook_endpoint_rotate(
                business_id=member.business_id, endpoint_id=endpoint.pk
            )
        endpoint = rotated
    elif request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            changes: dict[str, Any] = {
                "events": data["events"],
                "description": data["description"],
                "active": data["active"],
            }
            # The URL is checked (resolved) only when it changes: pausing an endpoint must not
            # fail because its host is down today.
            if data["url"] != endpoint.url:
                changes["url"] = data["url"]
            was_disabled = endpoint.disabled_at is not None
            try:
                with audited(request, "webhook_endpoint.update", endpoint, changes):
                    services.webhook_endpoint_update(
                        business_id=member.business_id, endpoint_id=endpoint.pk, changes=changes
                    )
            except DomainError as exc:
                form.add_service_error(exc)
                status = 422
            else:
                if was_disabled and data["active"]:
                    messages.success(
                        request, "The endpoint is active again: its waiting events are sent now."
                    )
                else:
                    messages.success(request, "The endpoint is saved.")
                # To the top, where the message is (the browser would return to the button).
                url = reverse("site-webhook", kwargs={"endpoint_id": endpoint.pk})
                return HttpResponseRedirect(f"{url}#content")
        else:
            status = 422
    attempts = WebhookAttempt.objects.filter(endpoint=endpoint).select_related("message")
    page = keyset.page_or_first(
        attempts, cursor=request.GET.get("cursor"), size=ATTEMPTS_PAGE_SIZE, by="at"
    )
    rows = []
    resendable: set[str] = set()
    for attempt in page.items:
        # One Resend per event, on its newest attempt: a resend sends the event, not the attempt.
        first_seen = attempt.message_id not in resendable
        resendable.add(attempt.message_id)
        rows.append({"attempt": attempt, "result": _result(attempt), "resend": first_seen})
    waiting = WebhookMessage.objects.filter(
        endpoint=endpoint, status=WebhookMessage.Status.PENDING
    ).count()
    resent_id = request.GET.get("resent", "")
    resent = WebhookMessage.objects.filter(endpoint=endpoint, pk=resent_id).first()
    context = {
        "nav": "webhooks",
        "member": member,
        "endpoint": endpoint,
        "resent": resent,
        "state": _state(endpoint),
        "form": form,
        "rotated": rotated,
        "page": page,
        "rows": rows,
        "waiting": waiting,
        "confirm_delete": "delete" in request.GET,
        "event_labels": EVENT_LABELS,
    }
    return render(request, "portal/webhook.html", context, status=status)


@login_required
@require_POST
def webhook_delete(request: HttpRequest, endpoint_id: str) -> HttpResponseRedirect:
    member = _member_or_404(request)
    endpoint = _endpoint_or_404(member, endpoint_id)
    with audited(request, "webhook_endpoint.delete", endpoint):
        services.webhook_endpoint_delete(business_id=member.business_id, endpoint_id=endpoint.pk)
    messages.success(
        request, f"The endpoint {endpoint.url} is deleted: no more events are sent to it."
    )
    return redirect("site-webhooks")


@login_required
@require_POST
def webhook_resend(request: HttpRequest, endpoint_id: str, message_id: str) -> HttpResponseRedirect:
    member = _member_or_404(request)
    endpoint = _endpoint_or_404(member, endpoint_id)
    try:
        with audited(request, "webhook_message.resend", (WebhookMessage, message_id)):
            message = services.webhook_message_resend(
                message_id=message_id, business_id=member.business_id, endpoint_id=endpoint.pk
            )
    except NotFound:
        raise Http404("no such webhook message") from None
    # Told beside the attempts, where the button was (a browser returns to the same scroll
    # position, so a message at the top of the page would go unseen).
    url = reverse("site-webhook", kwargs={"endpoint_id": endpoint.pk})
    return HttpResponseRedirect(f"{url}?resent={message.pk}#attempts")
