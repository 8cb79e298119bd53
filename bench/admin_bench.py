#!/usr/bin/env python
"""Admin benchmark: the sync-log changelist (/admin/adsync/push/) with millions of rows.

Fills PostgreSQL with N conversions and N sync-log rows (INSERT … SELECT generate_series, a
few minutes for 5M; skipped when the table already holds N rows), then times the first page of
the changelist through Django's test client, logged in as a superuser: unfiltered, with each
status filter, with the connection filter, and searching by msclkid and by order id. Prints,
per page, the median and worst of several requests, the SQL queries it made and the slowest
one; with --explain, that query's EXPLAIN ANALYZE. Not a test: it measures (target < 300 ms).

    .venv/bin/python bench/admin_bench.py --rows 5000000
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/adsync_bench_admin .venv/bin/python bench/admin_bench.py

The database is created if missing; with --refill (or a different row count) its adsync
tables are emptied first: never point it at a database you care about.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import benchdb  # noqa: E402  (needs the project root on the path)

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/adsync_bench_admin"
CHUNK = 1_000_000

# SQL expressions for the generated rows, by column; `g` is the generate_series value. Columns
# not named here get their model default, so new model fields do not break the bench.
CONVERSION_SQL = {
    "site_id": "%(site)s",
    "event_name": "'purchase'",
    "order_id": "'order-' || g",
    "value": "(g %% 500) + 0.5",
    "currency": "'USD'",
    "occurred_at": "now() - make_interval(secs => (%(rows)s - g) * 1.5)",
    "visitor_id": "md5('v' || g)",
    "msclkid": "CASE WHEN g %% 200 = 0 THEN '' ELSE md5('c' || g) END",
    "source": "'browser'",
    "created_at": "now() - make_interval(secs => (%(rows)s - g) * 1.5)",
}
# A quarter on a second connection; 1 in 200 pending_identity (no msclkid), 1 in 50 error, 1 in 400
# queued, the rest sent.
PUSH_SQL = {
    "conversion_id": "c.id",
    "connection_id": "CASE WHEN (c.id / 3) %% 4 = 0 THEN %(second)s ELSE %(first)s END",  # not tied to parity
    "goal_name": "'Purchase'",
    "msclkid": "c.msclkid",
    "value": "c.value",
    "currency": "c.currency",
    "conversion_time": "c.occurred_at",
    "status": ("CASE WHEN c.msclkid = '' THEN 'pending_identity' WHEN c.id %% 50 = 1 THEN 'error' "
               "WHEN c.id %% 400 = 3 THEN 'queued' ELSE 'sent' END"),
    "error_code": "CASE WHEN c.id %% 50 = 1 AND c.msclkid <> '' THEN 5604 END",
    "error_symbol": "CASE WHEN c.id %% 50 = 1 AND c.msclkid <> '' THEN 'OfflineConversionMicrosoftClickIdInvalid' "
                    "ELSE '' END",
    "error_message": "CASE WHEN c.id %% 50 = 1 AND c.msclkid <> '' THEN 'The Microsoft Click Id of the offline "
                     "conversion is invalid.' ELSE '' END",
    "attempts": "CASE WHEN c.id %% 400 = 3 THEN 0 ELSE 1 END",
    "next_attempt_at": "c.created_at",
    "dedupe_key": "CASE WHEN c.msclkid = '' THEN NULL ELSE encode(sha256(c.id::text::bytea), 'hex') END",
    "sent_at": "CASE WHEN c.msclkid <> '' AND c.id %% 50 <> 1 AND c.id %% 400 <> 3 THEN c.created_at END",
    "created_at": "c.created_at",
    "updated_at": "c.created_at",
}


def setup_django() -> None:
    os.environ.setdefault("DATABASE_URL", DEFAULT_DB)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.conf import settings

    settings.DEBUG = False


def ensure_database(url: str) -> None:
    if not url.startswith("postgres"):
        raise SystemExit("admin_bench needs PostgreSQL (DATABASE_URL=postgres://…)")
    benchdb.ensure_database(url)


def insert_select(model, expressions: dict[str, str], source: str, params: dict) -> str:
    """INSERT INTO <model> (every concrete column but id) SELECT <expression or model default> <source>."""
    from django.db import connection

    columns, values = [], []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(connection.ops.quote_name(field.column))
        if field.name in expressions or field.attname in expressions:
            values.append(expressions.get(field.name) or expressions[field.attname])
        else:
            key = f"default_{field.column}"
            params[key] = field.get_db_prep_save(field.get_default(), connection)
            values.append(f"%({key})s")
    table = connection.ops.quote_name(model._meta.db_table)
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)} {source}", params


def fill(rows: int) -> None:
    """Empty the adsync tables and generate `rows` conversions and sync-log rows, in chunks."""
    from django.db import connection
    from django.utils import timezone

    from adsync.models import Connection, Conversion, GoalMapping, Push, Site

    with connection.cursor() as cursor:
        tables = [m._meta.db_table for m in (Push, Conversion, GoalMapping, Connection, Site)]
        cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    site = Site.objects.create(name="Admin bench", key="pk_benchadmin")
    first, second = (Connection.objects.create(
        site=site, status=Connection.ACTIVE, customer_id="1", account_id=str(n), account_name=f"Account {n}",
        token_expires_at=timezone.now()) for n in (1, 2))
    ids = {"site": site.pk, "first": first.pk, "second": second.pk, "rows": rows}
    started = time.perf_counter()
    for start in range(1, rows + 1, CHUNK):
        end = min(rows, start + CHUNK - 1)
        bounds = {**ids, "lo": start, "hi": end}
        with connection.cursor() as cursor:
            sql, params = insert_select(Conversion, CONVERSION_SQL, "FROM generate_series(%(lo)s, %(hi)s) g",
                                        dict(bounds))
            cursor.execute(sql, params)
            sql, params = insert_select(Push, PUSH_SQL, "FROM adsync_conversion c WHERE c.id BETWEEN %(lo)s AND %(hi)s",
                                        dict(bounds))
            cursor.execute(sql, params)
        print(f"  filled {end:>9} rows  ({time.perf_counter() - started:.0f} s)", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE adsync_conversion")
        cursor.execute("VACUUM ANALYZE adsync_push")


def scenarios() -> list[tuple[str, str]]:
    """(label, query string) pairs; search terms are taken from real rows in the middle of the table."""
    from adsync.models import Connection, Push

    last = Push.objects.order_by("-pk").values_list("pk", flat=True).first()
    sample = Push.objects.filter(pk__gte=last // 2).exclude(msclkid="").order_by("pk").select_related("conversion").first()
    second = Connection.objects.order_by("-pk").first()
    return [
        ("unfiltered", ""),
        ("status=sent", "status__exact=sent"),
        ("status=error", "status__exact=error"),
        ("status=queued", "status__exact=queued"),
        ("status=pending_identity", "status__exact=pending_identity"),
        ("connection", f"connection__id__exact={second.pk}"),
        ("connection+status=error", f"connection__id__exact={second.pk}&status__exact=error"),
        ("search msclkid", f"q={sample.msclkid}"),
        ("search order id", f"q={sample.conversion.order_id}"),
        ("page 100", "p=100"),
    ]


def time_page(client, url: str, repeat: int) -> tuple[list[float], list[dict], int]:
    """Wall times of `repeat` requests (after one warm-up), and the queries of one more request."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(url)
    if response.status_code != 200:
        raise SystemExit(f"{url} answered {response.status_code}")
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        client.get(url)
        times.append((time.perf_counter() - started) * 1000)
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    return times, queries.captured_queries, len(response.content)


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return "\n".join("      " + row[0] for row in cursor.fetchall())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="sync-log rows, default 5,000,000")
    parser.add_argument("--repeat", type=int, default=7, help="timed requests per page, default 7")
    parser.add_argument("--refill", action="store_true", help="regenerate the rows even if the count matches")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of each page's slowest query")
    args = parser.parse_args()
    setup_django()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from adsync.models import Push

    call_command("migrate", verbosity=0)
    if args.refill or Push.objects.count() != args.rows:
        print(f"generating {args.rows} conversions and sync-log rows …", flush=True)
        fill(args.rows)
    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True, "email": "bench@example.com"})
    client = Client()
    client.force_login(user)
    base = "/admin/adsync/push/"
    print(f"database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}  rows: {Push.objects.count()}  "
          f"cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}")
    print(f"{'page':<26} {'median ms':>9} {'max ms':>7} {'queries':>7} {'slowest query ms':>16}  verdict (< 300 ms)")
    for label, query in scenarios():
        times, queries, _ = time_page(client, f"{base}?{query}" if query else base, args.repeat)
        slowest = max(queries, key=lambda q: float(q["time"]))
        median = statistics.median(times)
        print(f"{label:<26} {median:>9.0f} {max(times):>7.0f} {len(queries):>7} {float(slowest['time']) * 1000:>16.0f}"
              f"  {'met' if median < 300 else 'MISSED'}")
        if args.explain:
            print(f"    slowest: {slowest['sql'][:300]}")
            print(explain(slowest["sql"]))


if __name__ == "__main__":
    main()
