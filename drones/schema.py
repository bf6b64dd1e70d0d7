"""How the telemetry key authentication appears in the OpenAPI schema."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class TelemetryKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "drones.auth.TelemetryKeyAuthentication"
    name = "TelemetryKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Telemetry-Key <key>`: a drone's, or a gateway's for its bases",
        }
