from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.db import connection


def database_url() -> str:
    """The URL of the database the tests run on (the test database, not the configured one)."""
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


@pytest.fixture
def process_env(tmp_path: Path) -> dict[str, str]:
    """The environment for a process that must share this test's services and database."""
    env = dict(os.environ)
    env["WORKER_HEARTBEAT_FILE"] = str(tmp_path / "worker-heartbeat")
    env["PYTHONUNBUFFERED"] = "1"
    return env
