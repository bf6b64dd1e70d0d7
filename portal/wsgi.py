"""WSGI entry point for gunicorn: `gunicorn portal.wsgi:application`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

application = get_wsgi_application()

from portal.telemetry import configure_telemetry  # noqa: E402 - needs settings loaded

configure_telemetry(service_name="fabrikam-web")
