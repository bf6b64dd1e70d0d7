"""The public pages of notifications: "Notify me" on the tracking page, and unsubscribing.

Both are reached with an unguessable token (the tracking link, the signed unsubscribe link),
and answer without telling anything about other subscribers.
"""

from __future__ import annotations

from django import forms
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from deliveries import selectors
from notifications import services
from portal.errors import NotFound


class NotifyMeForm(forms.Form):
    email = forms.EmailField(max_length=254)


MESSAGES = {
    services.SubscribeResult.SUBSCRIBED: (
        "Done: we will email this address when the delivery changes stage. Every email has a "
        "link to stop them."
    ),
    services.SubscribeResult.FULL: "No more addresses can be added to this delivery.",
    services.SubscribeResult.FINISHED: "This delivery is over: there is nothing more to tell.",
}


@require_POST
def track_notify(request: HttpRequest, token: str) -> HttpResponse:
    """A recipient leaves an address to hear about this delivery's stage changes."""
    try:
        delivery = selectors.delivery_by_tracking_token(token=token)
    except NotFound:
        raise Http404("no delivery has this tracking link") from None
    form = NotifyMeForm(request.POST)
    if not form.is_valid():
        return render(
            request,
            "notifications/message.html",
            {"message": "Please give a valid email address.", "back": f"/track/{token}"},
            status=400,
        )
    result = services.subscription_create(delivery=delivery, email=form.cleaned_data["email"])
    return render(
        request,
        "notifications/message.html",
        {"message": MESSAGES[result], "back": f"/track/{token}"},
    )


# Mail clients send RFC 8058's one-click POST without a CSRF token; the signed token in the URL
# is what authorises it.
@csrf_exempt
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, signed: str) -> HttpResponse:
    """GET asks to confirm (link scanners follow GETs); POST unsubscribes."""
    subscription = services.subscription_by_signed_token(signed)
    if subscription is None:
        raise Http404("this unsubscribe link is not valid")
    if request.method == "POST":
        services.subscription_unsubscribe(subscription=subscription)
        return render(
            request,
            "notifications/message.html",
            {"message": "Unsubscribed: you will get no more emails about this delivery."},
        )
    return render(request, "notifications/unsubscribe.html", {"email": subscription.email})
