from django.urls import path

from airspace import api

urlpatterns = [
    path("zones", api.ZonesApi.as_view(), name="zone-list"),
    path("zones/<str:zone_id>", api.ZoneApi.as_view(), name="zone-detail"),
]
