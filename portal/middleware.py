"""The site's pages show and read times in the service area's zone (SITE_TIME_ZONE); the API,
the live feed and the probes keep UTC."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

UTC_PREFIXES = ("/api/", "/live/", "/healthz/")


class SiteTimeZoneMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.zone = zoneinfo.ZoneInfo(settings.SITE_TIME_ZONE)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(UTC_PREFIXES):
            return self.get_response(request)
        with timezone.override(self.zone):
            return self.get_response(request)
