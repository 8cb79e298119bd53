"""Draining the snippet's inbox (adsync.models.Hit) into clicks, conversions and sync-log rows.

The web side only inserts hits (tracking/accept.py). The worker drains them (jobs `adsync:inbox`
every minute, and before every flush) with the same code the server API uses
(adsync/intake/record.py), at each hit's receipt time, deleting the hit in the same transaction:
a crash leaves the hit in the inbox, and a hit drained twice finds its order id already stored.
A hit that raises keeps its error and waits for an operator (admin → inbox → Process again).

Drains may run side by side (a flush's, the schedule's, helpers). Each hit carries its visitor's
lane, and one transaction at a time stores a lane, oldest hit first: a visitor's click and
conversion are never stored at the same moment by two drains that cannot see each other's rows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import connection as db_connection
from django.db import transaction
from django.db.models import Count, Min, Q, QuerySet

from adsync.intake import record
from adsync.intake.reports import ClickPayload, ConversionPayload
from adsync.models import Conversion, Hit
from adsync.models.inbox import LANES

log = logging.getLogger(__name__)

CHUNK = 100  # hits per transaction
DRAIN_SECONDS = 50  # a scheduled drain's budget: runs a minute apart do not pile up
WAITING = Q(error="")  # a hit that failed waits for an operator instead (admin → Process again)
_LANE_LOCK = 0x48495453  # PostgreSQL advisory lock space of the inbox's lanes ("HITS")


@dataclass
class DrainResult:
    stored: int = 0
    failed: int = 0

    def line(self) -> str:
        return f"inbox: {self.stored} stored, {self.failed} failed"


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


def helpers_wanted(drainers: int) -> int:
    """How many helper drains should join the scheduled one (ADSYNC_INBOX_DRAINERS - 1 while a backlog waits).

    One process stores a few hundred hits a second at most. On PostgreSQL each helper takes a
    lane no other drain holds (`_take_chunk`); SQLite serialises writers, so helpers would only wait.
    """
    if drainers <= 1 or db_connection.vendor != "postgresql":
        return 0
    return drainers - 1 if pending()[CHUNK:CHUNK + 1].exists() else 0


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
        record.record_click(hit.site, ClickPayload(**data), now=hit.received_at)
        return
    if data["value"] is not None:
        data["value"] = Decimal(data["value"])
    if data["occurred_at"] is not None:
        data["occurred_at"] = datetime.fromisoformat(data["occurred_at"])
    record.record_conversion(hit.site, ConversionPayload(**data), source=Conversion.SOURCE_BROWSER,
                             now=hit.received_at, read_pushes=False)
