"""The portal's URLs plus `/bench/bare`: DRF with nothing of the project's own on the path."""

from typing import Any

from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.urls import urlpatterns as portal_urlpatterns


class BareApi(APIView):
    """What DRF costs by itself: no authentication, permission or throttle, no body parsed."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    throttle_classes: list[Any] = []

    def get(self, request: Request) -> Response:
        return Response({"ok": True})

    def post(self, request: Request) -> Response:
        return Response({"ok": True})


urlpatterns = [path("bench/bare", BareApi.as_view()), *portal_urlpatterns]
