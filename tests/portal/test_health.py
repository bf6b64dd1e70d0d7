from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client, override_settings

from portal.localservices import free_port, mongo_server, redis_server


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
def test_readiness_is_ok_when_every_dependency_answers(client: Client) -> None:
    response = client.get("/healthz/ready")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"] == {
        "database": "ok",
        "redis": "ok",
        "mongodb": "ok",
        "broker": "ok",
    }


@pytest.mark.django_db
def test_readiness_names_redis_while_it_is_down_and_recovers(
    client: Client, tmp_path: Path
) -> None:
    server = redis_server(tmp_path).start()
    try:
        with override_settings(REDIS_URL=server.url):
            assert client.get("/healthz/ready").status_code == 200

            server.stop()
            response = client.get("/healthz/ready")
            assert response.status_code == 503
            assert response.json()["failed"] == ["redis"]
            assert "redis" in response.json()["checks"]
            assert response.json()["checks"]["redis"] != "ok"

            server.start()
            assert client.get("/healthz/ready").status_code == 200
    finally:
        server.stop()


@pytest.mark.django_db
def test_readiness_names_mongodb_while_it_is_down_and_recovers(
    client: Client, tmp_path: Path
) -> None:
    server = mongo_server(tmp_path).start()
    try:
        with override_settings(MONGODB_URI=server.url, HEALTHCHECK_TIMEOUT_SECONDS=1):
            assert client.get("/healthz/ready").status_code == 200

            server.stop()
            response = client.get("/healthz/ready")
            assert response.status_code == 503
            assert response.json()["failed"] == ["mongodb"]

            server.start()
            # The driver rediscovers the server in the background; readiness follows.
            from tests.support import wait_for

            wait_for(
                lambda: client.get("/healthz/ready").status_code == 200,
                timeout=15,
                what="readiness back to 200 once MongoDB is back",
            )
    finally:
        server.stop()


@pytest.mark.django_db
def test_readiness_names_the_broker_while_it_is_down(client: Client) -> None:
    with override_settings(CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0"):
        response = client.get("/healthz/ready")
    assert response.status_code == 503
    assert response.json()["failed"] == ["broker"]


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
