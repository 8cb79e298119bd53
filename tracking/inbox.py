"""Accept a validated snippet report into the inbox, and drain the inbox into clicks and conversions.

`accept` is the web request's only write. `drain` (the worker: schedule `adsync:inbox` every
minute, and before every flush) stores each hit with the same code the server API uses
(tracking/ingest.py), at the hit's receipt time, and deletes it in the same transaction: a
crash leaves the hit in the inbox, and a hit drained twice finds its order id already stored.
A hit that raises keeps its error and waits for an operator (admin → inbox → Process again).
"""

from __future__ import annotations

import json
import logging
import time
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
    row = (site.pk, kind, payload, now or timezone.now())
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


def insert_hits(rows: list[tuple], connection: BaseDatabaseWrapper = db_connection) -> None:
    """One INSERT for (site id, kind, payload dict, received_at) rows (on the group writer's
    connection, or the caller's).

    On PostgreSQL the rows travel as one JSON array parameter, unpacked by the server: encoding
    one list in C costs far less than binding four parameters per row in Python.
    """
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_INSERT_FROM_JSON, [json.dumps([(s, k, p, t.isoformat()) for s, k, p, t in rows])])
        else:
            adapt = connection.ops.adapt_datetimefield_value
            cursor.execute(_INSERT_VALUES + ", ".join([_ROW] * len(rows)),
                           [v for s, k, p, t in rows for v in (s, k, json.dumps(p), adapt(t))])


_COLUMNS = f"{Hit._meta.db_table} (site_id, kind, payload, received_at, error)"
_INSERT_FROM_JSON = (f"INSERT INTO {_COLUMNS} SELECT (r->>0)::bigint, r->>1, r->2, (r->>3)::timestamptz, ''"
                     " FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS rows(r, n) ORDER BY n")
_INSERT_VALUES = f"INSERT INTO {_COLUMNS} VALUES "
_ROW = "(%s, %s, %s, %s, '')"
group_writer = GroupWriter(insert_hits)


def drain(seconds: float | None = None) -> DrainResult:
    """Store waiting hits in receipt order until the inbox is empty (or `seconds` have passed)."""
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
    on PostgreSQL each locks its own chunks (SKIP LOCKED). SQLite serialises writers, so there
    helpers would only wait: none are queued.
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
    """One transaction: lock a chunk (SKIP LOCKED: concurrent drainers take other hits), store, delete."""
    with transaction.atomic():
        hits = pending().select_related("site").order_by("id")
        if db_connection.vendor == "postgresql":
            hits = hits.select_for_update(skip_locked=True, of=("self",))
        hits = list(hits[:CHUNK])
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
