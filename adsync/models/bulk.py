"""Many rows at once: inserted for the inbox drain's chunks (adsync/intake/chunk.py), matched by one array.

On PostgreSQL the rows go in with COPY, taking their ids from the table's sequence first when other
rows will refer to them: Django's bulk_create prepares every value of every field in Python, which
cost the drain more than storing the rows. Elsewhere (SQLite) it is bulk_create. Either way a
duplicate key raises IntegrityError: callers check what exists first, and treat the error as a
concurrent writer (the drain then stores its chunk one hit at a time).
"""

from __future__ import annotations

import time

from django.db import connection
from django.db.models import BigAutoField, CharField, Model
from django.db.models.lookups import In


def new(model: type[Model], **values) -> Model:
    """An unsaved instance built from its fields in order, `values` by attname (`site_id`, not `site`), defaults
    for the rest: Django's keyword __init__ costs three times as much, which counts at hundreds per chunk."""
    fields = model._meta.concrete_fields
    if unknown := values.keys() - {f.attname for f in fields}:
        raise TypeError(f"{model.__name__} has no field {', '.join(sorted(unknown))}")
    return model(*[values[f.attname] if f.attname in values else f.get_default() for f in fields])


def insert(model: type[Model], objs: list[Model], *, with_ids: bool = False) -> None:
    """INSERT these unsaved instances; `with_ids` sets their primary keys (rows inserted next refer to them)."""
    if not objs:
        return
    if connection.vendor != "postgresql":
        model.objects.bulk_create(objs)  # sets the keys on backends that return them (SQLite ≥ 3.35 does)
        return
    meta = model._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    stamped = [f for f in fields if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)]
    with connection.cursor() as cursor:
        if with_ids:
            cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                           [meta.db_table, meta.pk.column, len(objs)])
            for obj, (pk,) in zip(objs, cursor.fetchall(), strict=True):
                obj.pk = pk
            fields = [meta.pk, *fields]
        for obj in objs:
            for field in stamped:
                field.pre_save(obj, add=True)
        attnames = [f.attname for f in fields]
        columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
        sql = f"COPY {connection.ops.quote_name(meta.db_table)} ({columns}) FROM STDIN"
        started = time.monotonic()
        with cursor.cursor.copy(sql) as copy:  # psycopg's own cursor: Django's wrapper has no COPY
            for obj in objs:
                copy.write_row([getattr(obj, name) for name in attnames])
        if connection.queries_logged:  # counted like any other statement (CaptureQueriesContext, DEBUG)
            connection.queries_log.append({"sql": f"{sql} -- {len(objs)} rows",
                                           "time": f"{time.monotonic() - started:.3f}"})


class AnyOf(In):
    """`field__any=[...]`: `field = ANY(%s)` with one array parameter on PostgreSQL, where Django's `IN` binds a
    parameter per value (slow to send and to parse for a thousand); elsewhere it is `IN`."""

    lookup_name = "any"

    def as_postgresql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        return f"{lhs} = ANY(%s)", (*lhs_params, list(self.rhs))


BigAutoField.register_lookup(AnyOf)  # ids: the flush's outcomes, the drain's deletes
CharField.register_lookup(AnyOf)  # click ids, visitor ids, hashes, order ids, dedupe keys
