"""The public tracking page: anyone with the unguessable link, no login."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from deliveries import live, selectors
from portal.errors import NotFound


@require_GET
def track(request: HttpRequest, token: str) -> HttpResponse:
    try:
        delivery = selectors.delivery_by_tracking_token(token=token)
    except NotFound:
        raise Http404("no delivery has this tracking link") from None
    status = live.status_read(delivery.id) or live.status_of(delivery)
    return render(request, "deliveries/track.html", {"delivery": delivery, "live": status})
