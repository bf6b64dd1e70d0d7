"""An outage is a 503 with Retry-After; any other database error is a bug: a logged 500 with an
error id and no internal text."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest
import redis
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.utils import DataError, InterfaceError, OperationalError, ProgrammingError

from deliveries import services
from devtools.localservices import free_port
from portal import outages
from tests.conftest import Tenant, delivery_body, make_fleet


def raised(run: Any) -> BaseException:
    try:
        with transaction.atomic():
            run()
    except Exception as exc:  # noqa: BLE001 - the point is to keep it
        return exc
    raise AssertionError("nothing was raised")


def refused_connection() -> OperationalError:
    """What Django raises when PostgreSQL refuses the connection."""
    try:
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/x", connect_timeout=2)
    except psycopg.OperationalError as cause:
        error = OperationalError(str(cause))
        error.__cause__ = cause
        return error
    raise AssertionError("connected to a closed port")


@pytest.mark.django_db(transaction=True)
def test_only_a_lost_or_refused_connection_is_an_outage() -> None:
    def cursor(sql: str) -> Any:
        return lambda: connection.cursor().execute(sql)

    # One statement each: SQLite's driver refuses two in one execute.
    connection.cursor().execute("CREATE TEMP TABLE t (x int primary key)")
    integrity = raised(cursor("INSERT INTO t VALUES (1), (1)"))
    programming = raised(cursor("SELECT * FROM no_such_table"))
    assert isinstance(integrity, IntegrityError)
    assert isinstance(programming, ProgrammingError | OperationalError)  # SQLite: Operational
    assert not outages.unavailable(integrity)
    assert not outages.unavailable(programming)
    if connection.vendor == "postgresql":
        data = raised(cursor("SELECT 'x'::int"))
        assert isinstance(data, DataError)
        assert not outages.unavailable(data)
        assert outages.unavailable(refused_connection())
    assert outages.unavailable(InterfaceError("connection already closed"))
    refused_redis = raised(lambda: redis.Redis(port=free_port(), socket_connect_timeout=1).ping())
    assert outages.unavailable(refused_redis)
    assert not outages.unavailable(redis.exceptions.ResponseError("WRONGTYPE"))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("error", "status"),
    [
        (
            IntegrityError(
                'duplicate key value violates unique constraint "deliveries_secret_uniq"'
            ),
            500,
        ),
        (ProgrammingError('relation "deliveries_secret" does not exist'), 500),
        (DataError("value too long for type character varying(300)"), 500),
        (InterfaceError("connection already closed"), 503),
    ],
)
def test_the_api_answers_an_outage_503_and_a_database_error_500_with_an_error_id(
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    expect_server_error: None,
    error: DatabaseError,
    status: int,
) -> None:
    make_fleet(1)

    def fail(**_: Any) -> None:
        raise error

    monkeypatch.setattr(services, "delivery_create", fail)
    with caplog.at_level(logging.WARNING, logger="portal.api"):
        response = tenant.client.post_json("/api/v1/deliveries", delivery_body())
    assert response.status_code == status
    body = response.json()["error"]
    if status == 503:
        assert response["Retry-After"]
        assert body["code"] == "unavailable"
        return
    assert "Retry-After" not in response
    assert body["code"] == "server_error"
    assert "secret" not in response.content.decode() and "varying" not in body["message"]
    error_id = body["message"].rsplit(" ", 1)[-1]
    logged = [r for r in caplog.records if getattr(r, "error_id", None) == error_id]
    assert logged and logged[0].levelno == logging.ERROR
    assert (
        logged[0].exc_info or "IntegrityError" in (logged[0].exc_text or "") or logged[0].exc_text
    )
