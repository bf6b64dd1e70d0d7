"""Starts the local backing services before Django's settings are read.

Loaded with `-p tests.services_plugin` so that it runs before pytest-django imports settings:
settings read REDIS_URL, MONGODB_URI and CELERY_BROKER_URL once, at import.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pytest

from devtools.localservices import local_services

_stack = contextlib.ExitStack()


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: Any, parser: Any, args: Any) -> None:
    # DEBUG on for the development defaults; the production checks have tests of their own.
    os.environ.setdefault("DEBUG", "true")
    os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
    # The live server answers each request on a new thread; a persistent connection per thread
    # would outlive it and exhaust PostgreSQL's max_connections under the concurrency tests.
    os.environ.setdefault("DATABASE_CONN_MAX_AGE", "0")
    # Every test builds its own fleet; one test checks the cache itself.
    os.environ.setdefault("FLEET_SHAPE_CACHE_SECONDS", "0")
    # Ignore a running `make run`: tests use their own servers.
    os.environ.setdefault("FABRIKAM_IGNORE_LOCAL_SERVICES_FILE", "true")
    urls = _stack.enter_context(local_services())
    os.environ.update(urls)


def pytest_unconfigure(config: Any) -> None:
    _stack.close()
