from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from django.test import Client, override_settings

from devtools.localservices import free_port, mongo_server, redis_server
from tests.support import wait_for


def test_liveness_answers_without_touching_any_dependency(client: Client) -> None:
    # Every dependency points at a closed port: liveness must not care.
    dead = f"127.0.0.1:{free_port()}"
    with override_settings(
        REDIS_URL=f"redis://{dead}/0",
        MONGODB_URI=f"mongodb://{dead}/",
        CELERY_BROKER_URL=f"redis://{dead}/0",
    ):
        response = client.get("/healthz/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readiness_checks_what_a_request_needs_and_the_report_checks_everything(
    client: Client,
) -> None:
    response = client.get("/healthz/ready")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}
    report = client.get("/healthz/dependencies")
    assert report.status_code == 200, report.json()
    assert report.json()["checks"] == {
        "database": "ok",
        "redis": "ok",
        "mongodb": "ok",
        "broker": "ok",
    }


@pytest.mark.django_db
def test_readiness_names_redis_while_it_is_down_and_recovers(
    client: Client, tmp_path: Path
) -> None:
    # API keys and rate limits live in Redis: no API request is served without it.
    server = redis_server(tmp_path).start()
    try:
        with override_settings(REDIS_URL=server.url):
            assert client.get("/healthz/ready").status_code == 200

            server.stop()
            response = client.get("/healthz/ready")
            assert response.status_code == 503
            assert response.json()["failed"] == ["redis"]
            assert response.json()["checks"]["redis"] != "ok"

            server.start()
            assert client.get("/healthz/ready").status_code == 200
    finally:
        server.stop()


@pytest.mark.django_db
def test_mongodb_paused_or_stopped_leaves_web_ready_and_the_report_names_it(
    client: Client, tmp_path: Path
) -> None:
    # The outbox and the workflow's retries cover MongoDB: web keeps accepting deliveries.
    server = mongo_server(tmp_path).start()
    assert server.process is not None
    try:
        with override_settings(MONGODB_URI=server.url, HEALTHCHECK_TIMEOUT_SECONDS=1):
            assert client.get("/healthz/dependencies").status_code == 200

            os.kill(server.process.pid, signal.SIGSTOP)  # paused: connections hang
            started = time.monotonic()
            assert client.get("/healthz/ready").status_code == 200
            assert time.monotonic() - started < 1
            report = client.get("/healthz/dependencies")
            assert report.status_code == 503
            assert report.json()["failed"] == ["mongodb"]
            os.kill(server.process.pid, signal.SIGCONT)

            server.stop()
            assert client.get("/healthz/ready").status_code == 200
            assert client.get("/healthz/dependencies").json()["failed"] == ["mongodb"]

            server.start()
            # The driver rediscovers the server in the background; the report follows.
            wait_for(
                lambda: client.get("/healthz/dependencies").status_code == 200,
                timeout=15,
                what="the report back to 200 once MongoDB is back",
            )
    finally:
        if server.process is not None and server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


@pytest.mark.django_db
def test_a_dead_broker_leaves_web_ready_and_the_report_names_it(client: Client) -> None:
    # A delivery accepted meanwhile waits in the outbox for the relay.
    with override_settings(CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0"):
        assert client.get("/healthz/ready").status_code == 200
        response = client.get("/healthz/dependencies")
    assert response.status_code == 503
    assert response.json()["failed"] == ["broker"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/healthz/live",
        "/healthz/ready",
        "/healthz/dependencies",
        "/%68ealthz/ready",
        "/%68%65althz%2Fdependencies",
        "/healthz/%72eady",
    ],
)
@pytest.mark.parametrize("header", ["X-Forwarded-For", "X-Original-Host"])
def test_probes_and_the_report_are_not_found_through_the_ingress_however_spelt(
    client: Client, path: str, header: str
) -> None:
    assert client.get(path).status_code == 200
    assert client.get(path, headers={header: "203.0.113.9"}).status_code == 404


def test_readiness_answers_503_not_500_when_the_database_is_unreachable(client: Client) -> None:
    # No django_db mark: tests may not use the database, so the check's query fails.
    response = client.get("/healthz/ready")
    assert response.status_code == 503
    assert "database" in response.json()["failed"]


def test_readiness_checks_only_what_the_process_is_told_to(client: Client) -> None:
    # The live-feed process needs the database and Redis only: a dead broker does not matter.
    with override_settings(
        CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0",
        HEALTHCHECK_READY_CHECKS=["redis"],
    ):
        response = client.get("/healthz/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {"redis": "ok"}
