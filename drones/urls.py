from django.urls import path

from drones import api

urlpatterns = [
    path("telemetry", api.TelemetryApi.as_view(), name="telemetry"),
]
