"""Which failures are outages of a dependency (unreachable for now: retry later) and which are
errors (a bug, a refused statement: retrying will not help).

The API answers an outage 503 with Retry-After and an error 500 with an error id (portal.api);
the workflow retries an outage until the delivery's own deadline and gives up on an error
quickly (workers.tasks).
"""

from __future__ import annotations

import errno
import smtplib
import sqlite3
from collections.abc import Iterator

import pymongo.errors
import redis.exceptions
from django.db import InterfaceError, OperationalError

# PostgreSQL's SQLSTATEs that mean "no connection now": class 08 (connection exception), the
# server shutting down or starting (57P01-57P03), too many connections (53300).
_UNAVAILABLE_SQLSTATES = {"57P01", "57P02", "57P03", "53300"}
# SQLite's way of saying the same: another process holds the file, or it cannot be opened.
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database file", "disk i/o error")
_NETWORK_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ETIMEDOUT,
    errno.EPIPE,
}


def database_unavailable(exc: BaseException) -> bool:
    """A lost or refused database connection (not a failed statement)."""
    if isinstance(exc, InterfaceError):
        return True  # the connection is closed or broken
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    if isinstance(cause, sqlite3.Error):
        return str(cause).lower().startswith(_SQLITE_UNAVAILABLE)
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate:
        return sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES
    # psycopg raises OperationalError without a SQLSTATE when the connection failed or was lost
    # (refused, reset, "server closed the connection unexpectedly"): no statement was refused.
    return True


def redis_unavailable(exc: BaseException) -> bool:
    """Redis unreachable or not answering (not a refused command)."""
    from django_redis.exceptions import ConnectionInterrupted

    if isinstance(exc, ConnectionInterrupted):
        # django-redis wraps every error of the client, a refused command's too.
        return exc.__cause__ is None or redis_unavailable(exc.__cause__)
    return isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError)


def unavailable(exc: BaseException) -> bool:
    """What the API answers 503 for: the database or Redis (keys, rate limits) unreachable."""
    return database_unavailable(exc) or redis_unavailable(exc)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _transient_one(exc: BaseException) -> bool:
    from kombu.exceptions import OperationalError as BrokerError

    from portal.broker import PublishTimeout

    if unavailable(exc):
        return True
    if isinstance(exc, pymongo.errors.ConnectionFailure):  # refused, timed out, no primary
        return True
    if isinstance(exc, pymongo.errors.PyMongoError) and exc.has_error_label("RetryableWriteError"):
        return True
    if isinstance(exc, pymongo.errors.OperationFailure) and exc.code in (16500, 50):
        return True  # Cosmos DB's "request rate is large", a server-side time limit
    if isinstance(exc, BrokerError | PublishTimeout):
        return True
    if isinstance(exc, smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError):
        return True
    if isinstance(exc, smtplib.SMTPResponseException) and 400 <= exc.smtp_code < 500:
        return True
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS


def transient(exc: BaseException) -> bool:
    """Whether `exc`, or what caused it, is a dependency out of reach for now (MongoDB, Redis,
    the broker, the database, the mail server): worth retrying for as long as there is time."""
    return any(_transient_one(link) for link in _chain(exc))


def dependency_name(exc: BaseException) -> str:
    """Which dependency an exception came from, in an operator's words."""
    for link in _chain(exc):
        module = type(link).__module__
        for prefix, name in (
            ("pymongo", "MongoDB"),
            ("redis", "Redis"),
            ("django_redis", "Redis"),
            ("kombu", "the broker"),
            ("amqp", "the broker"),
            ("azure", "the broker"),
            ("portal.broker", "the broker"),
            ("django.db", "the database"),
            ("psycopg", "the database"),
            ("sqlite3", "the database"),
            ("smtplib", "the mail server"),
        ):
            if module.startswith(prefix):
                return name
    return "a service"


def describe(exc: BaseException) -> str:
    """One line for operators: the dependency, the error's type and text."""
    return f"{dependency_name(exc)}: {type(exc).__name__}: {exc}"[:240]
