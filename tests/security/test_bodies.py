"""Bodies over the cap: a 413 with the error body, the upload read to its end."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
from collections.abc import Iterator

import pytest
import requests

from devtools.localservices import free_port
from tests.conftest import Tenant, database_url
from tests.support import BASE_DIR, PYTHON, stop_process_group, wait_for


@pytest.fixture(scope="module")
def server(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """gunicorn serving portal.wsgi on the test database, as the Procfile starts it."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url(), "PYTHONUNBUFFERED": "1"}
    log = tmp_path_factory.mktemp("bodies") / "gunicorn.log"
    command = [
        PYTHON, "-m", "gunicorn", "portal.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", "1",
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: requests.get(f"{url}/healthz/live", timeout=2).ok,
            timeout=30,
            what=f"gunicorn answering (log: {log})",
        )
        yield url
    finally:
        stop_process_group(process)


@pytest.fixture
def gunicorn(transactional_db: None, server: str) -> str:
    """The server, with this test's rows committed where it can see them."""
    return server


def raw_post(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST `body` as a plain HTTP client does: all of it sent, then the answer read (a
    connection closed mid-upload raises here, as it fails the client)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_a_body_over_the_cap_is_413_with_the_error_body_not_a_reset_connection(
    gunicorn: str, tenant: Tenant
) -> None:
    # 5 MB, twice Django's DATA_UPLOAD_MAX_MEMORY_SIZE: sent in full, the answer read after.
    body = b'{"note": "' + b"x" * 5_000_000 + b'"}'
    headers = {"Authorization": f"Api-Key {tenant.key}", "Content-Type": "application/json"}
    status, content = raw_post(gunicorn, "/api/v1/deliveries", body, headers)
    assert status == 413, content[:300]
    error = json.loads(content)["error"]
    assert error["code"] == "too_large"
    assert "2621440 bytes" in error["message"]


def test_a_page_body_over_the_cap_is_413_too(gunicorn: str) -> None:
    body = b"email=" + b"x" * 3_000_000
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, content = raw_post(gunicorn, "/login", body, headers)
    assert status == 413, content[:300]
    assert b"larger than" in content


def test_a_body_within_the_cap_is_read_as_before(gunicorn: str, tenant: Tenant) -> None:
    # Large but allowed: not refused for its size (the delivery is invalid for other reasons).
    body = json.dumps({"pickup": {"address": "x" * 2_000_000}}).encode()
    headers = {"Authorization": f"Api-Key {tenant.key}", "Content-Type": "application/json"}
    status, content = raw_post(gunicorn, "/api/v1/deliveries", body, headers)
    assert status == 400, content[:300]
    assert json.loads(content)["error"]["code"] == "invalid"
