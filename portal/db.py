"""Inserts on the ingestion path, with each model's INSERT statement compiled once.

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

from django.db import connections
from django.db.models import Model
from django.db.models.sql import InsertQuery

_statements: dict[tuple[str, type[Model]], tuple[str, list[Any]]] = {}


def insert(instance: Model, *, using: str = "default") -> None:
    """Insert `instance` as a new row, like `instance.save(force_insert=True)`."""
    model = type(instance)
    connection = connections[using]
    statement = _statements.get((using, model))
    if statement is None:
        meta = model._meta
        fields = [f for f in meta.local_concrete_fields if f is not meta.auto_field]
        query = InsertQuery(model)
        query.insert_values(fields, [instance], raw=False)
        ((sql, _),) = query.get_compiler(connection=connection).as_sql()
        statement = _statements[(using, model)] = (sql, fields)
    sql, fields = statement
    params = [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    instance._state.adding = False
    instance._state.db = using
