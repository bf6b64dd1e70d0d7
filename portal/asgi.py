"""ASGI entry point for the `live` process: `uvicorn portal.asgi:application`.

Django runs each ASGI request's synchronous work (middleware, the ORM, django-redis) on a
thread of that request's own, kept until the response ends. For a live feed that is the feed's
whole life: a thousand open feeds would hold a thousand idle threads, each with its own
database connection. Here every request shares one thread for that work instead, as a WSGI
worker does, so the process holds one database connection however many feeds are open; the
feeds themselves wait as coroutines.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import django
from asgiref.sync import ThreadSensitiveContext
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup(set_prefix=False)

from portal.telemetry import configure_telemetry  # noqa: E402 - needs settings loaded

# Before the handler loads its middleware: the Django instrumentation adds one of its own.
configure_telemetry(service_name="fabrikam-live")

django_application = get_asgi_application()
sync_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="django-sync")


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        await django_application(scope, receive, send)
        return
    async with ThreadSensitiveContext(executor=sync_thread):
        await django_application(scope, receive, send)
