"""Writes on the hot paths (accepting and assigning deliveries): each INSERT compiled once.

Django compiles every INSERT anew, field by field: for a delivery that costs more than running
the statement. For the same model and database the statement never changes, only its values,
so `insert` compiles it once per process and then does what `Model.save(force_insert=True)`
does for a new row: each field's `pre_save` (defaults, `auto_now_add`) and `get_db_prep_save`.
It sends no `pre_save`/`post_save` signals (nothing listens to the models it is used for) and
does not read back database-generated values: a model with an auto-increment primary key keeps
`pk` None on the instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from django.db import connections, transaction
from django.db.models import Field, Model
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


def execute_together(
    statements: list[Statement], *, unless: Statement | None = None, using: str = "default"
) -> bool:
    """Apply `statements` (INSERTs from `prepare_insert`) all or none; True when written.

    `unless`: a query of one row and one boolean column; when it answers true, nothing is
    written and the answer is False (a limit reached, say). Not a lock: two calls at once may
    both find it false.

    On PostgreSQL all of it is one statement (data-modifying CTEs, `one_statement`), which the
    server commits on its own outside a transaction: storing a delivery and its event after
    checking the business's limit is one round trip instead of five (the check, BEGIN, two
    INSERTs, COMMIT). A foreign key of a later row to an earlier one is checked at the end of
    the statement, which sees both. Elsewhere (SQLite has no INSERT in WITH) the check, then
    the INSERTs in a transaction."""
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(*one_statement(statements, unless=unless))
            return cursor.fetchone() is not None
    with transaction.atomic(using=using):
        if unless is not None:
            with connection.cursor() as cursor:
                cursor.execute(*unless)
                (refused,) = cursor.fetchone()
            if refused:
                return False
        execute(statements, using=using)
    return True


def one_statement(statements: list[Statement], *, unless: Statement | None = None) -> Statement:
    """PostgreSQL: `statements` as one, answering a row when written. The first INSERT runs
    unless `unless` answers true; each later one selects its row only if the first wrote one.

    `INSERT ... VALUES (...)` becomes `INSERT ... SELECT ...`: the server infers each bound
    value's type from its column as it does for VALUES."""
    clauses: list[str] = []
    params: list[Any] = []
    if unless is not None:
        clauses.append(f"refused AS ({unless[0]})")
        params += unless[1]
    for i, (sql, values) in enumerate(statements):
        head, found, rest = sql.partition(" VALUES (")
        if not found or not rest.endswith(")") or " VALUES (" in rest:
            raise ValueError(f"not a one-row INSERT: {sql[:80]}")
        select = f"{head} SELECT {rest[:-1]}"
        if i == 0:
            condition = " WHERE NOT (SELECT * FROM refused)" if unless is not None else ""
            statement = f"{select}{condition} RETURNING 1"
        else:
            statement = f"{select} FROM w0 RETURNING 1"
        params += values
        if i < len(statements) - 1:
            clauses.append(f"w{i} AS ({statement})")
        else:
            last = statement
    return (f"WITH {', '.join(clauses)} {last}" if clauses else last), params


def insert(*instances: Model, using: str = "default") -> None:
    """Insert `instances` as new rows, like `instance.save(force_insert=True)` for each."""
    execute(prepare_insert(*instances, using=using), using=using)


def update_rows(instances: Sequence[Model], fields: list[str], *, using: str = "default") -> None:
    """Write these fields of each instance to its row by primary key: one UPDATE per row, sent
    together (executemany: psycopg pipelines them, one round trip), where Django's
    bulk_update builds a CASE per field and row, whose compilation cost more than the writes
    for a round of assignments. The instances must all be of one model."""
    if not instances:
        return
    connection = connections[using]
    meta = instances[0]._meta
    columns = [cast("Field[Any, Any]", meta.get_field(name)) for name in fields]
    quote = connection.ops.quote_name
    sql = "UPDATE {} SET {} WHERE {} = %s".format(  # noqa: S608  # nosec B608 # quoted names only
        quote(meta.db_table),
        ", ".join(f"{quote(cast(str, f.column))} = %s" for f in columns),
        quote(cast(str, meta.pk.column)),
    )
    rows = [
        [f.get_db_prep_save(getattr(i, f.attname), connection) for f in columns]
        + [meta.pk.get_db_prep_value(i.pk, connection)]
        for i in instances
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)
