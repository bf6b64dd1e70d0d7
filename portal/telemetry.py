"""OpenTelemetry through Microsoft's Azure Monitor distro, on when a connection string is set."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)
_configured = False


def configure_telemetry(*, service_name: str) -> bool:
    """Export traces, metrics and logs to Application Insights when a connection string is set."""
    global _configured
    from django.conf import settings

    if _configured or not settings.APPLICATIONINSIGHTS_CONNECTION_STRING:
        return False
    from azure.monitor.opentelemetry import configure_azure_monitor

    configure_azure_monitor(
        connection_string=settings.APPLICATIONINSIGHTS_CONNECTION_STRING,
        resource_attributes={"service.name": service_name},
    )
    _configured = True
    logger.info("telemetry exported to Azure Monitor as %s", service_name)
    return True
