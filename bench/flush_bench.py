#!/usr/bin/env python
"""Flush benchmark: conversions/second per account and SQL queries per 1,000-row batch.

Queues N conversions for one connection, then flushes them against a zero-latency Microsoft
stand-in (a real HTTP server on loopback answering `{"PartialErrors": []}`), and prints the
figures. Not a test: it asserts nothing, it measures.

    .venv/bin/python bench/flush_bench.py --rows 10000 --rows 100000
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/adsync_bench_flush .venv/bin/python bench/flush_bench.py --rows 1000000

Without DATABASE_URL it uses a throwaway SQLite file in bench/out/. A PostgreSQL database is
created if missing; the database is migrated and its adsync tables emptied first: never point it
at a database you care about.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.benchdb import ensure_database  # noqa: E402  (needs the project root on the path)

(ROOT / "bench" / "out").mkdir(exist_ok=True)
os.environ.setdefault("DATABASE_URL", f"sqlite:///{ROOT / 'bench' / 'out' / 'bench.sqlite3'}")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class StandIn(BaseHTTPRequestHandler):
    """Microsoft with no latency: reads the body, answers success with a TrackingId."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"PartialErrors": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("TrackingId", "bench")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_stand_in() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def queue(site, connection, rows: int) -> None:
    """Insert N conversions and their queued pushes (in SQL on PostgreSQL, so the process's peak
    memory is the flush's own, not the queue builder's)."""
    from django.db import connection as db
    from django.utils import timezone

    if db.vendor == "postgresql":
        return queue_in_sql(site, connection, rows, timezone.now() - timedelta(hours=3))

    from adsync.models import Conversion, Push

    when = timezone.now().replace(microsecond=0) - timedelta(hours=3)
    chunk = 20_000
    for start in range(0, rows, chunk):
        size = min(chunk, rows - start)
        conversions = Conversion.objects.bulk_create(
            Conversion(site=site, event_name="purchase", order_id=f"b{start + i}", value=12.5, currency="USD",
                       msclkid=f"{start + i:032x}", occurred_at=when) for i in range(size))
        if conversions[0].pk is None:
            conversions = list(Conversion.objects.filter(order_id__in=[f"b{start + i}" for i in range(size)]))
        Push.objects.bulk_create(
            Push(conversion=c, connection=connection, goal_name="Purchase", msclkid=c.msclkid, value=c.value,
                 currency="USD", conversion_time=c.occurred_at) for c in conversions)


def queue_in_sql(site, connection, rows: int, when) -> None:
    from django.db import connection as db

    with db.cursor() as cursor:
        cursor.execute("""
            INSERT INTO adsync_conversion (site_id, event_name, order_id, value, currency, occurred_at, visitor_id,
                msclkid, hashed_email, hashed_phone, source, consent, created_at, idempotency_key)
            SELECT %s, 'purchase', 'b' || n, 12.5, 'USD', date_trunc('second', %s::timestamptz), '',
                lpad(to_hex(n), 32, '0'), '', '', 'server', '', now(), ''
            FROM generate_series(1, %s) AS n""", [site.pk, when, rows])
        cursor.execute("""
            INSERT INTO adsync_push (conversion_id, connection_id, goal_name, msclkid, hashed_email, hashed_phone,
                value, currency, conversion_time, status, error_symbol, error_message, tracking_id, attempts,
                next_attempt_at, created_at, updated_at, kind, source)
            SELECT id, %s, 'Purchase', msclkid, '', '', value, 'USD', occurred_at, 'queued', '', '', '', 0,
                now(), now(), now(), 'conversion', 'server'
            FROM adsync_conversion WHERE site_id = %s""", [connection.pk, site.pk])
        cursor.execute("ANALYZE adsync_push")


def run(rows: int) -> dict:
    from django.db import connection as db
    from django.db.backends.signals import connection_created
    from django.utils import timezone

    from adsync.models import Connection, Conversion, GoalMapping, Push, Site
    from adsync.push.flush import flush_connection

    if db.vendor == "postgresql":  # the ORM's cascade would load every old row into memory
        with db.cursor() as cursor:
            cursor.execute("TRUNCATE adsync_push, adsync_conversion CASCADE")  # and rows referring to them
    Push.objects.all().delete()
    Conversion.objects.all().delete()
    Connection.objects.all().delete()
    Site.objects.all().delete()
    site = Site.objects.create(name="Bench", key="bench")
    connection = Connection.objects.create(
        site=site, status=Connection.ACTIVE, customer_id="1", account_id="2", access_token="bench",
        refresh_token="bench", token_expires_at=timezone.now() + timedelta(days=1))
    GoalMapping.objects.create(connection=connection, event_name="purchase", goal_name="Purchase")
    started = time.perf_counter()
    queue(site, connection, rows)
    queued_in = time.perf_counter() - started

    started = time.perf_counter()
    counted = itertools.count()

    def count(execute, sql, params, many, context):  # counts without keeping the SQL (memory)
        next(counted)
        return execute(sql, params, many, context)

    def count_on(sender, connection, **kwargs):  # each flush lane opens its own database connection
        connection.execute_wrappers.append(count)

    connection_created.connect(count_on)
    try:
        with db.execute_wrapper(count):
            result = flush_connection(connection)
    finally:
        connection_created.disconnect(count_on)
    elapsed = time.perf_counter() - started
    queries = next(counted)
    return {
        "rows": rows, "sent": result.sent, "requests": result.requests, "seconds": elapsed,
        "per_second": result.sent / elapsed if elapsed else 0.0,
        "queries_per_batch": queries / max(1, result.requests),  # all of them, set-up and lanes' last claims too
        "queue_seconds": queued_in,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="queue size (repeatable); default 10000")
    args = parser.parse_args()

    import django

    from bench.faultkit import bench_secrets

    os.environ["MICROSOFT_ADS_ENVIRONMENT"] = "production"
    os.environ.update(bench_secrets())  # production refuses to start without keys of its own
    os.environ["MICROSOFT_ADS_CAMPAIGN_API_URL"] = start_stand_in()
    os.environ.setdefault("ADSYNC_REQUESTS_PER_MINUTE", "1000000")
    ensure_database(os.environ["DATABASE_URL"])
    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from adsync.push.flush import flush_lanes

    settings.DEBUG = False
    call_command("migrate", verbosity=0)
    print(f"database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}  "
          f"stand-in: {settings.MICROSOFT_ADS_CAMPAIGN_API_URL}  lanes (ADSYNC_FLUSH_LANES): {flush_lanes()}  "
          f"cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}")
    print(f"{'rows':>9} {'sent':>9} {'requests':>8} {'seconds':>8} {'conv/s':>9} {'queries/batch':>13} "
          f"{'peak RSS MB':>11}")
    for rows in args.rows or [10_000]:
        r = run(rows)
        print(f"{r['rows']:>9} {r['sent']:>9} {r['requests']:>8} {r['seconds']:>8.2f} {r['per_second']:>9.0f} "
              f"{r['queries_per_batch']:>13.1f} {r['peak_rss_mb']:>11.0f}")


if __name__ == "__main__":
    main()
