"""portal.sqlite: the embedded database's query log writes parameters as SQLite's QUOTE() does,
without running a query of its own."""

from __future__ import annotations

import sqlite3

import pytest
from django.db import connection
from django.db.backends.sqlite3.operations import DatabaseOperations as DjangoOperations
from django.test.utils import CaptureQueriesContext

from businesses.models import Business
from portal.sqlite.base import quote

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


@pytest.mark.django_db
def test_the_query_log_quotes_parameters_without_a_query_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("the embedded backend is SQLite's; this run's database is not SQLite")
    assert connection.settings_dict["ENGINE"] == "portal.sqlite"

    def refuse(*_: object) -> None:
        raise AssertionError("Django's quoting runs a query per logged query")

    monkeypatch.setattr(DjangoOperations, "_quote_params_for_last_executed_query", refuse)
    with CaptureQueriesContext(connection) as queries:
        list(Business.objects.filter(name="Fabrikam's", id__isnull=False).values_list("id"))
    (logged,) = [q["sql"] for q in queries.captured_queries]
    assert "\"name\" = 'Fabrikam''s'" in logged


@pytest.mark.django_db
def test_named_parameters_are_quoted_too() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("the embedded backend is SQLite's; this run's database is not SQLite")
    with CaptureQueriesContext(connection) as queries, connection.cursor() as cursor:
        cursor.execute("SELECT %(a)s, %(b)s", {"a": "it's", "b": None})
    assert queries.captured_queries[-1]["sql"] == "SELECT 'it''s', NULL"
