"""No cliff after deletes: every query of the drain and the flush is served by an index, whatever the
tables went through (docs/performance.md#no-cliff-after-deletes).

After a million conversions were deleted, the drain once fell to about 10 hits/s: ANALYZE had
seen the emptied table, the planner believed every index equally cheap, and the visitor lookup
went through an index by site alone, over every dead row of the site. Here the tables are
filled, then most of their rows are deleted (retention) or all of them (a bench emptying its
tables, ANALYZE run before VACUUM), and every statement the drain, the server API's single-hit
path and the flush run is explained on PostgreSQL: none may read a large table in full or by
site alone, and none may touch more than a few dozen pages.
"""

from __future__ import annotations

import re

import pytest
from django.db import connection as db_connection
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from adsync.intake import inbox, record
from adsync.intake.reports import ClickPayload, ConversionPayload
from adsync.models import Conversion, Hit
from adsync.models.inbox import lane_of
from adsync.push import claims, transitions

pytestmark = [
    pytest.mark.skipif(db_connection.vendor != "postgresql", reason="the plans of PostgreSQL's planner"),
    pytest.mark.django_db(transaction=True),  # VACUUM and ANALYZE run outside a transaction
]
ROWS = 30_000
BIG_TABLES = ("adsync_conversion", "adsync_click", "adsync_push", "tracking_hit")
# Pages a lookup may touch (shared hits + reads): a few per row it returns and a few dozen besides. A scan
# by site alone reads over a thousand here. (Writes also touch every index of every row they change.)
PAGES, PAGES_PER_ROW = 50, 15
SMALL_TABLE = 200  # pages: a table this small may be read in full (the tables filled here have over 1,000)


def fill(site, connection) -> None:
    """ROWS conversions of the last weeks with their clicks and sync-log rows; one in 20 waits for a click."""
    with db_connection.cursor() as cursor:
        cursor.execute("""
            INSERT INTO adsync_conversion (site_id, event_name, order_id, value, currency, occurred_at, visitor_id,
                msclkid, hashed_email, hashed_phone, source, consent, created_at, idempotency_key)
            SELECT %(site)s, 'purchase', 'h-' || g, 10, 'USD', now() - make_interval(secs => g * 60),
                'v' || (g %% 5000), CASE WHEN g %% 20 = 0 THEN '' ELSE md5('c' || g) END,
                CASE WHEN g %% 7 = 0 THEN md5('e' || g) ELSE '' END, '', 'server', '', now(), ''
            FROM generate_series(1, %(rows)s) g""", {"site": site.pk, "rows": ROWS})
        cursor.execute("""
            INSERT INTO adsync_click (site_id, visitor_id, msclkid, clicked_at, landing_url)
            SELECT site_id, visitor_id, msclkid, occurred_at - interval '1 minute', ''
            FROM adsync_conversion WHERE msclkid <> ''""")
        cursor.execute("""
            INSERT INTO adsync_push (conversion_id, connection_id, goal_name, msclkid, hashed_email, hashed_phone, value,
                currency, conversion_time, status, error_symbol, error_message, tracking_id, attempts,
                next_attempt_at, created_at, updated_at, dedupe_key, kind, source)
            SELECT id, %(connection)s, 'Purchase', msclkid, '', '', value, 'USD', occurred_at,
                CASE WHEN msclkid = '' THEN 'pending_identity' WHEN id %% 10 = 0 THEN 'queued' ELSE 'sent' END,
                '', '', '', 0, now(), now(), now(), CASE WHEN msclkid = '' THEN NULL ELSE md5('k' || id) END,
                'conversion', 'server'
            FROM adsync_conversion""", {"connection": connection.pk})


def forget(history: str) -> None:
    """Delete as retention would (the oldest nine tenths) or as a bench emptying its tables (all), then ANALYZE."""
    with db_connection.cursor() as cursor:
        keep = "WHERE false" if history == "all deleted" else "ORDER BY id DESC LIMIT %s" % (ROWS // 10)
        cursor.execute(f"DELETE FROM adsync_push WHERE conversion_id NOT IN (SELECT id FROM adsync_conversion {keep})")
        cursor.execute(f"DELETE FROM adsync_click WHERE id NOT IN (SELECT id FROM adsync_click {keep})")
        cursor.execute(f"DELETE FROM adsync_conversion WHERE id NOT IN (SELECT id FROM adsync_conversion {keep})")
        cursor.execute("ANALYZE adsync_conversion, adsync_click, adsync_push")


def queue_inbox(site) -> None:
    """A chunk of hits of visitors the history knows and of new ones: clicks, conversions with and without click ids."""
    now = timezone.now()
    hits = []
    for n in range(60):
        visitor = f"v{n * 83 % 5000}" if n % 2 else f"new{n}"
        payload = {"visitor_id": visitor, "msclkid": f"clk{n}", "url": ""}
        hits.append(Hit(site=site, kind=Hit.CLICK, lane=lane_of(visitor), payload=payload, received_at=now))
        hits.append(Hit(site=site, kind=Hit.CONVERSION, lane=lane_of(visitor), received_at=now, payload={
            "event": "purchase", "order_id": f"n-{n}" if n % 3 else f"h-{n + 1}", "value": "5", "currency": "USD",
            "occurred_at": None, "msclkid": "" if n % 4 else f"clk{n}", "visitor_id": visitor,
            "hashed_email": "", "hashed_phone": ""}))
    Hit.objects.bulk_create(hits)


def statements(site, connection) -> list[str]:
    """Every statement of a drain, of the server API's single-hit path, and of a flush's claim and outcome."""
    with CaptureQueriesContext(db_connection) as captured:
        inbox.drain()
        record.record_click(site, ClickPayload(visitor_id="v11", msclkid="api-click"))
        record.record_conversion(site, ConversionPayload(event="purchase", order_id="api-1", visitor_id="v12",
                                                         hashed_email="e" * 64), source=Conversion.SOURCE_SERVER)
        record.record_conversion(site, ConversionPayload(event="purchase", order_id="h-3", msclkid="api-2"),
                                 source=Conversion.SOURCE_SERVER)
        batch = claims.claim_batch(connection, 100)
        outcome = transitions.BatchOutcome(batch[0].claim_token if batch else None)
        for push in batch:
            outcome.send(push)
        outcome.write("t")
    return [q["sql"] for q in captured.captured_queries
            if re.match(r"\s*(SELECT|UPDATE|DELETE|WITH)\b", q["sql"]) and any(t in q["sql"] for t in BIG_TABLES)]


def explain(sql: str) -> tuple[str, int, int]:
    """The executed plan of one statement (rolled back), the pages its top node touched and its rows."""
    with transaction.atomic(), db_connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT) " + sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        transaction.set_rollback(True)
    top = next((line for line in plan.splitlines() if line.strip().startswith("Buffers:")), "")
    rows = int(re.search(r"actual time=\S+ rows=(\d+)", plan).group(1))
    return plan, sum(int(n) for n in re.findall(r"(?:hit|read)=(\d+)", top)), rows


def pages_of(table: str) -> int:
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size(%s) / current_setting('block_size')::int", [table])
        return cursor.fetchone()[0]


@pytest.mark.parametrize("history", ["most deleted", "all deleted"])
def test_every_drain_and_flush_statement_uses_an_index_after_rows_were_deleted(site, connection, history):
    fill(site, connection)
    forget(history)
    queue_inbox(site)

    sqls = statements(site, connection)

    assert len(sqls) > 15 and not Hit.objects.exists()
    for sql in sqls:
        plan, pages, rows = explain(sql)
        for table in re.findall(r"Seq Scan on (\w+)", plan):
            assert table == "tracking_hit" or pages_of(table) <= SMALL_TABLE, f"read in full: {sql}\n{plan}"
        if pages > PAGES:  # by site alone is harmless over a table holding little more than the chunk
            assert not re.search(r"Index Cond: \(site_id = \d+\)\s*$", plan, re.M), f"by site alone: {sql}\n{plan}"
        if not sql.lstrip().startswith(("UPDATE", "DELETE")):
            assert pages <= PAGES + PAGES_PER_ROW * rows, f"{pages} pages for {rows} rows: {sql}\n{plan}"
    connections.close_all()

