"""portal.sqlite: the embedded database's query log writes parameters as SQLite's QUOTE() does,
without running a query of its own; settings choose it when no DATABASE_URL is given."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

# base before operations: operations alone is a circular import when the configured database
# is not SQLite (Django has not loaded the backend then).
from django.db.backends.sqlite3 import base, operations  # noqa: F401
from django.db.utils import ConnectionHandler

from portal.sqlite.base import DatabaseWrapper, quote
from tests.portal.test_settings import setting

# What SQLite stores (text, integers, NULL, blobs) and floats Python and QUOTE() write alike.
VALUES = [
    "plain",
    "",
    "O'Brien's ''quoted''",
    "Zürich 🚁 ünïcode",
    "a % sign and %s",
    "line\nbreak",
    None,
    0,
    -7,
    2**62,
    True,
    False,
    b"",
    b"\x00\x01\xfe\xff",
    bytearray(b"drone"),
    1.5,
    -0.25,
    47.6062,
    -122.3321,
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_quote_writes_what_sqlite_quote_writes(value: object) -> None:
    with sqlite3.connect(":memory:") as raw:
        (expected,) = raw.execute("SELECT QUOTE(?)", [value]).fetchone()
    assert quote(value) == expected


@pytest.fixture
def embedded(django_db_blocker: Any) -> Iterator[DatabaseWrapper]:
    """A connection of its own to an in-memory database through the embedded backend, its
    queries logged as with DEBUG on (whatever database the tests run on)."""
    # A handler of its own (not django.db.connections), in which this is the default database.
    handler = ConnectionHandler({"default": {"ENGINE": "portal.sqlite", "NAME": ":memory:"}})
    connection = handler["default"]
    assert isinstance(connection, DatabaseWrapper)
    connection.force_debug_cursor = True
    # Not the test database, which pytest-django guards: a database of this test's own.
    with django_db_blocker.unblock():
        yield connection
        connection.close()


def test_the_query_log_quotes_parameters_without_a_query_of_its_own(
    embedded: DatabaseWrapper, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object) -> None:
        raise AssertionError("Django's quoting runs a query per logged query")

    monkeypatch.setattr(
        operations.DatabaseOperations, "_quote_params_for_last_executed_query", refuse
    )
    with embedded.cursor() as cursor:
        cursor.execute("SELECT %s, %s, %s", ["Fabrikam's", None, 3])
        assert cursor.fetchone() == ("Fabrikam's", None, 3)
    assert embedded.queries[-1]["sql"] == "SELECT 'Fabrikam''s', NULL, 3"


def test_named_parameters_are_quoted_too(embedded: DatabaseWrapper) -> None:
    with embedded.cursor() as cursor:
        cursor.execute("SELECT %(a)s, %(b)s", {"a": "it's", "b": b"\x01"})
    assert embedded.queries[-1]["sql"] == "SELECT 'it''s', X'01'"


def test_the_embedded_database_is_this_backend() -> None:
    assert setting("DATABASES['default']['ENGINE']", DEBUG="true") == "portal.sqlite"
