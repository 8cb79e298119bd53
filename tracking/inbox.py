"""Accept a validated snippet report into the inbox, and drain the inbox into clicks and conversions.

`accept` is the web request's only write. `drain` (the worker: schedule `adsync:inbox` every
minute, and before every flush) stores each hit with the same code the server API uses
(tracking/ingest.py), at the hit's receipt time, and deletes it in the same transaction: a
crash leaves the hit in the inbox, and a hit drained twice finds its order id already stored.
A hit that raises keeps its error and waits for an operator (admin → inbox → Process again).

Drains may run side by side (a flush's, the schedule's, helpers). Each hit carries its visitor's
lane, and one transaction at a time stores a lane, oldest hit first: a visitor's click and
conversion are never stored at the same moment by two drains that cannot see each other's rows.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db import connection as db_connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Count, Min, Q, QuerySet
from django.utils import timezone

from adsync.models import Conversion, Site
from tracking import ingest
from tracking.group_commit import GroupWriter
from tracking.models import Hit
from tracking.payloads import ClickPayload, ConversionPayload
from tracking.site_cache import forget

log = logging.getLogger(__name__)

CHUNK = 100  # hits per transaction
DRAIN_SECONDS = 50  # a scheduled drain's budget: runs a minute apart do not pile up
WAITING = Q(error="")  # a hit that failed waits for an operator instead (admin → Process again)
LANES = 8  # drains that can store at once on PostgreSQL; a visitor's hits all share one lane
_LANE_LOCK = 0x48495453  # PostgreSQL advisory lock space of the inbox's lanes ("HITS")


@dataclass
class DrainResult:
    stored: int = 0
    failed: int = 0

    def line(self) -> str:
        return f"inbox: {self.stored} stored, {self.failed} failed"


class SiteGone(Exception):
    """The site was deleted after this process cached it (tracking/site_cache.py)."""


def accept(site: Site, report: ClickPayload | ConversionPayload, now: datetime | None = None) -> str:
    """Queue a validated report; its receipt time becomes the click or conversion time.

    Returns once the hit is committed. Concurrent requests of one process share the commit
    (tracking/group_commit.py) unless the caller holds a transaction, which the hit then joins.
    """
    kind = Hit.CLICK if isinstance(report, ClickPayload) else Hit.CONVERSION
    payload = dict(report.__dict__)  # the dataclass's fields, all plain values but these two
    if kind == Hit.CONVERSION:  # JSON keeps the value exact as text, and the time as ISO 8601
        payload["value"] = None if report.value is None else str(report.value)
        payload["occurred_at"] = report.occurred_at.isoformat() if report.occurred_at else None
    row = (site.pk, kind, payload, now or timezone.now(), lane_of(report.visitor_id))
    try:
        if _shares_commits():
            group_writer.write(row)
        else:
            insert_hits([row])
    except IntegrityError:  # the site's row is gone (a deferred foreign key fails here, at commit)
        forget(site.key)
        raise SiteGone(site.key) from None
    return kind


def _shares_commits() -> bool:
    """Group commit, unless the caller holds a transaction (the hit then joins it) or the database is
    a private in-memory SQLite one (`sqlite://:memory:`), which the writer thread's connection would not see."""
    return (settings.ADSYNC_INBOX_GROUP_COMMIT and not db_connection.in_atomic_block
            and db_connection.settings_dict["NAME"] != ":memory:")


def lane_of(visitor_id: str) -> int:
    """The drain lane of a visitor's hits: the same in every process (crc32, not the salted hash())."""
    return zlib.crc32(visitor_id.encode()) % LANES


def insert_hits(rows: list[tuple], connection: BaseDatabaseWrapper = db_connection) -> None:
    """One INSERT for (site id, kind, payload dict, received_at, lane) rows (on the group writer's
    connection, or the caller's).

    On PostgreSQL the rows travel as one JSON array parameter, unpacked by the server: encoding
    one list in C costs far less than binding four parameters per row in Python.
    """
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_INSERT_FROM_JSON, [json.dumps([(s, k, p, t.isoformat(), n) for s, k, p, t, n in rows])])
        else:
            adapt = connection.ops.adapt_datetimefield_value
            cursor.execute(_INSERT_VALUES + ", ".join([_ROW] * len(rows)),
                           [v for s, k, p, t, n in rows for v in (s, k, json.dumps(p), adapt(t), n)])


_COLUMNS = f"{Hit._meta.db_table} (site_id, kind, payload, received_at, lane, error)"
_INSERT_FROM_JSON = (f"INSERT INTO {_COLUMNS} SELECT (r->>0)::bigint, r->>1, r->2, (r->>3)::timestamptz,"
                     " (r->>4)::smallint, ''"
                     " FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS rows(r, n) ORDER BY n")
_INSERT_VALUES = f"INSERT INTO {_COLUMNS} VALUES "
_ROW = "(%s, %s, %s, %s, %s, '')"
group_writer = GroupWriter(insert_hits)


def drain(seconds: float | None = None) -> DrainResult:
    """Store waiting hits until the inbox is empty (or `seconds` have passed): each visitor's in the
    order they were received, the oldest first."""
    result = DrainResult()
    deadline = time.monotonic() + seconds if seconds else None
    while deadline is None or time.monotonic() < deadline:
        if not _drain_chunk(result):
            break
    if result.stored or result.failed:
        log.info(result.line())
    return result


def scheduled_drain() -> str:
    """django-q2 schedule `adsync:inbox`: at most DRAIN_SECONDS.

    One process stores a few hundred hits a second at most (the ORM work of each hit). When more
    than a chunk waits, ADSYNC_INBOX_DRAINERS - 1 helper tasks join in on other django-q workers:
    on PostgreSQL each takes a lane no other drain holds (`_take_chunk`). SQLite serialises
    writers, so there helpers would only wait: none are queued.
    """
    helpers = settings.ADSYNC_INBOX_DRAINERS - 1
    if helpers > 0 and db_connection.vendor == "postgresql" and pending()[CHUNK:CHUNK + 1].exists():
        from django_q.tasks import async_task

        for _ in range(helpers):
            async_task("tracking.inbox.helper_drain", group="adsync:inbox-helpers")
    return helper_drain()


def helper_drain() -> str:
    """A helper queued by scheduled_drain, beside it: the same bounded drain."""
    return drain(seconds=DRAIN_SECONDS).line()


def pending() -> QuerySet[Hit]:
    """Hits waiting to be stored."""
    return Hit.objects.filter(WAITING)


@dataclass
class Backlog:
    waiting: int
    failed: int
    oldest: datetime | None  # received_at of the oldest waiting hit


def backlog() -> Backlog:
    """What the inbox holds, in one aggregate query (the sync dashboard)."""
    row = Hit.objects.aggregate(waiting=Count("id", filter=WAITING), failed=Count("id", filter=~WAITING),
                                oldest=Min("received_at", filter=WAITING))
    return Backlog(row["waiting"], row["failed"], row["oldest"])


def _drain_chunk(result: DrainResult) -> int:
    """One transaction: take a chunk (on PostgreSQL of a lane no other drain holds), store it, delete it.

    SQLite has one writer at a time: there the chunk is simply the oldest waiting hits."""
    with transaction.atomic():
        hits = _take_chunk()
        done = []
        for hit in hits:
            try:
                with transaction.atomic():
                    store(hit)
                done.append(hit.pk)
            except Exception as exc:  # kept with its error, never dropped
                log.exception("inbox hit %s could not be stored", hit.pk)
                Hit.objects.filter(pk=hit.pk).update(error=f"{type(exc).__name__}: {exc}"[:2000])
                result.failed += 1
        Hit.objects.filter(pk__in=done).delete()
        result.stored += len(done)
    return len(hits)


def _take_chunk() -> list[Hit]:
    """The oldest waiting hits; on PostgreSQL those of the oldest lane no other drain holds, which
    this transaction then holds (an empty list: every waiting lane is being stored by another drain)."""
    hits = pending().select_related("site").order_by("id")
    if db_connection.vendor != "postgresql":
        return list(hits[:CHUNK])
    lanes = dict.fromkeys(pending().order_by("id").values_list("lane", flat=True)[:LANES * CHUNK])
    with db_connection.cursor() as cursor:
        for lane in lanes:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [_LANE_LOCK, lane])
            if cursor.fetchone()[0]:
                chunk = list(hits.filter(lane=lane).select_for_update(of=("self",))[:CHUNK])
                if chunk:  # else another drain emptied it since we looked: try the next
                    return chunk
    return []


def store(hit: Hit) -> None:
    """Record one hit exactly as the synchronous endpoint used to, at its receipt time."""
    data = dict(hit.payload)
    if hit.kind == Hit.CLICK:
        ingest.record_click(hit.site, ClickPayload(**data), now=hit.received_at)
        return
    if data["value"] is not None:
        data["value"] = Decimal(data["value"])
    if data["occurred_at"] is not None:
        data["occurred_at"] = datetime.fromisoformat(data["occurred_at"])
    ingest.record_conversion(hit.site, ConversionPayload(**data), source=Conversion.SOURCE_BROWSER,
                             now=hit.received_at, read_pushes=False)
