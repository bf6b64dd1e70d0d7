"""Celery's configuration: Django's `CELERY_*` settings, copied into a plain dict once.

Celery looks its settings up through a layered view on every message it sends, a couple of dozen
lookups per message; over Django's settings object each one is an attribute lookup that often
ends in AttributeError. A dict answers them for a tenth of the cost. Imported lazily, the first
time Celery reads its configuration, so Django's settings are loaded by then.
"""

from django.conf import settings

CONFIG = {name: getattr(settings, name) for name in dir(settings) if name.startswith("CELERY_")}
