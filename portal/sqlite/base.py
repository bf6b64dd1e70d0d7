"""The embedded database (no DATABASE_URL: `make run`, the tests): Django's SQLite backend, but
the query log quotes each query's parameters in Python instead of asking SQLite.

With DEBUG on (`make run`), Django records every query with its parameters written in
(`connection.queries`). Its SQLite backend quotes them by running a second query, `SELECT
QUOTE(?), ...`, for every query that has parameters: py-spy found it 8 % of the Celery worker's
samples under bench/system.py's 150 deliveries a second. With the quoting here, the system's CPU
per delivery was 19.4 ms against 23.4 and 25.3 with Django's (runs before and after it, the same
day; 123 deliveries accepted and 88 assigned per second against 102 and 69, 99 and 63).

The quoting here writes what QUOTE() writes for every type SQLite stores: text, integers, NULL
and blobs; a float as Python writes it (QUOTE writes 15 significant digits). The log is for
reading; nothing runs the text. A speed-up for the embedded database only: it stays because the
system as `make run` starts it is below issue 14's 150 deliveries a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db.backends.sqlite3 import base, operations


def quote(value: Any) -> str:
    """`value` as an SQL literal, as SQLite's QUOTE() writes it."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"X'{bytes(value).hex().upper()}'"
    text = value if isinstance(value, str) else str(value)
    return "'" + text.replace("'", "''") + "'"


def _quoted(values: Iterable[Any]) -> tuple[str, ...]:
    return tuple(quote(value) for value in values)


class DatabaseOperations(operations.DatabaseOperations):
    def last_executed_query(self, cursor: Any, sql: str, params: Any) -> str:
        if not params:
            return sql  # as Django's: `%` is not applied to a query without parameters
        if isinstance(params, Mapping):
            return sql % dict(zip(params, _quoted(params.values()), strict=True))
        return sql % _quoted(params)


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
