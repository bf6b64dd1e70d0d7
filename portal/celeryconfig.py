"""Celery's configuration: Django's `CELERY_*` settings, copied into a plain dict once, under
Celery's own names (`CELERY_TASK_ACKS_LATE` becomes `task_acks_late`).

Celery looks its settings up through a layered view on every message it sends, a couple of dozen
lookups per message; over Django's settings object each one is an attribute lookup that often
ends in AttributeError. A dict answers them for a tenth of the cost. Imported lazily, the first
time Celery reads its configuration, so Django's settings are loaded by then.

The names are Celery's, not the Django ones under `namespace="CELERY"`: given those, Celery
takes the three that were also its names before 4.0 (`CELERY_ACCEPT_CONTENT`,
`CELERY_TASK_SERIALIZER`, `CELERY_TIMEZONE`) for old settings and warns at every start that they
are deprecated, a false alarm (celery/celery#6366). `CELERY_DB_REUSE_MAX` is not Celery's own:
its Django fixup reads it under that name, so it keeps it.
"""

from django.conf import settings

PREFIX = "CELERY_"
KEPT_AS_IS = {"CELERY_DB_REUSE_MAX"}


def celery_name(django_name: str) -> str:
    """The name Celery knows a Django `CELERY_*` setting by."""
    if django_name in KEPT_AS_IS:
        return django_name
    return django_name.removeprefix(PREFIX).lower()


CONFIG = {
    celery_name(name): getattr(settings, name) for name in dir(settings) if name.startswith(PREFIX)
}
