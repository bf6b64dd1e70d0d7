"""Inserts on the hot paths (accepting and assigning deliveries), each model's INSERT compiled once.

Django compiles every INSERT anew, field by field: for a delivery that costs more than running
the statement. For the same model and database the statement never changes, only its values,
so `insert` compiles it once per process and then does what `Model.save(force_insert=True)`
does for a new row: each field's `pre_save` (defaults, `auto_now_add`) and `get_db_prep_save`.
It sends no `pre_save`/`post_save` signals (nothing listens to the models it is used for) and
does not read back database-generated values: a model with an auto-increment primary key keeps
`pk` None on the instance.
"""

from __future__ import annotations

from typing import Any

from django.db import connections, transaction
from django.db.models import Model
from django.db.models.sql import InsertQuery

_statements: dict[tuple[str, type[Model]], tuple[str, list[Any]]] = {}
Statement = tuple[str, list[Any]]


def prepare_insert(*instances: Model, using: str = "default") -> list[Statement]:
    """The INSERT statements and values of `instances`, ready for `execute`.

    Preparing outside the transaction keeps the transaction, and SQLite's one write lock,
    as short as the statements themselves."""
    connection = connections[using]
    prepared = []
    for instance in instances:
        model = type(instance)
        statement = _statements.get((using, model))
        if statement is None:
            meta = model._meta
            fields = [
                f
                for f in meta.local_concrete_fields
                if f is not meta.auto_field and not f.generated
            ]
            query = InsertQuery(model)
            query.insert_values(fields, [instance], raw=False)
            ((sql, _),) = query.get_compiler(connection=connection).as_sql()
            statement = _statements[(using, model)] = (sql, fields)
        sql, fields = statement
        prepared.append(
            (sql, [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in fields])
        )
        instance._state.adding = False
        instance._state.db = using
    return prepared


def execute(statements: list[Statement], *, using: str = "default") -> None:
    with connections[using].cursor() as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)


def execute_together(statements: list[Statement], *, using: str = "default") -> None:
    """Apply `statements` (INSERTs from `prepare_insert`) all or none.

    On PostgreSQL they are sent as one statement, every INSERT but the last in a WITH clause
    (data-modifying CTEs): outside a transaction the server commits it on its own, so storing
    a delivery and its event is one round trip instead of four (BEGIN, two INSERTs, COMMIT).
    The foreign key of the later row to the earlier is checked at the end of the statement,
    which sees both. Elsewhere (SQLite has no INSERT in WITH) in a transaction."""
    connection = connections[using]
    if connection.vendor != "postgresql" or len(statements) < 2:
        with transaction.atomic(using=using):
            execute(statements, using=using)
        return
    with connection.cursor() as cursor:
        cursor.execute(*one_statement(statements))


def one_statement(statements: list[Statement]) -> Statement:
    """PostgreSQL: `statements` as one, every INSERT but the last in a WITH clause."""
    *first, (last_sql, last_params) = statements
    clauses = ", ".join(f"w{i} AS ({sql})" for i, (sql, _) in enumerate(first))
    params = [value for _, values in first for value in values] + last_params
    return f"WITH {clauses} {last_sql}", params


def insert(*instances: Model, using: str = "default") -> None:
    """Insert `instances` as new rows, like `instance.save(force_insert=True)` for each."""
    execute(prepare_insert(*instances, using=using), using=using)
