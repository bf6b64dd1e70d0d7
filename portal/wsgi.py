"""WSGI entry point for gunicorn: `gunicorn portal.wsgi:application`."""

import os

import django
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup(set_prefix=False)

from portal.telemetry import configure_telemetry  # noqa: E402 - needs settings loaded

# Before the handler loads its middleware: the Django instrumentation adds one of its own.
configure_telemetry(service_name="fabrikam-web")

application = get_wsgi_application()
