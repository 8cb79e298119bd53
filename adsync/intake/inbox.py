"""Draining the snippet's inbox (adsync.models.Hit) into clicks, conversions and sync-log rows.

The web side only inserts hits (tracking/accept.py). The worker drains them (jobs `adsync:inbox`
every minute, and before every flush) a chunk at a time: a chunk's hits are stored as the server
API's code (adsync/intake/record.py) would store them one after the other, at each hit's receipt
time, in a constant number of queries (adsync/intake/chunk.py), and deleted in the same
transaction: a crash leaves them in the inbox, and a hit drained twice finds its order id already
stored. A hit that cannot be read keeps its error and waits for an operator (admin → inbox →
Process again); if the database refuses the chunk's writes, the chunk is stored one hit at a time
with record.py itself, so only the hit at fault keeps an error.

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
from django.db.models import Case, Count, Min, Q, QuerySet, Value, When

from adsync.intake import chunk, record
from adsync.intake.reports import ClickPayload, ConversionPayload
from adsync.models import Click, Conversion, Hit, Push, planner
from adsync.models.inbox import LANES

log = logging.getLogger(__name__)

CHUNK = 500  # hits per transaction
LANE_SCAN = LANES * 100  # waiting hits read, oldest first, to find the lanes with work
DRAIN_SECONDS = 50  # a scheduled drain's budget: runs a minute apart do not pile up
WAITING = Q(error="")  # a hit that failed waits for an operator instead (admin → Process again)
_LANE_LOCK = 0x48495453  # PostgreSQL advisory lock space of the inbox's lanes ("HITS")


@dataclass
class DrainResult:
    stored: int = 0
    failed: int = 0

    def line(self) -> str:
        return f"inbox: {self.stored} stored, {self.failed} failed"


def drain(seconds: float | None = None, *, received_before: bool = False) -> DrainResult:
    """Store the waiting hits, each visitor's in the order they were received, the oldest first.

    A pass stores every hit waiting when it starts. Another pass follows while a chunk or more
    arrived meanwhile; fewer wait for the next run, so a drain under light traffic stores in full
    chunks instead of spinning on a few hits at a time. `seconds` bounds the whole drain;
    `received_before` stops after the first pass (the flush: every conversion received before it
    is stored, and hits arriving faster than the drain cannot hold the flush back).
    """
    result = DrainResult()
    planner.vacuum_emptied([Click._meta.db_table, Conversion._meta.db_table, Push._meta.db_table])
    deadline = time.monotonic() + seconds if seconds else None
    in_time = lambda: deadline is None or time.monotonic() < deadline  # noqa: E731
    span = _Span()
    while in_time() and (newest := pending().order_by("-id").values_list("id", flat=True).first()):
        span.newest = newest
        while in_time() and _drain_chunk(result, span):
            pass
        if received_before or not pending().filter(id__gt=newest)[CHUNK - 1:CHUNK].exists():
            break
    if result.stored or result.failed:
        log.info(result.line())
    return result


def helpers_wanted(drainers: int) -> int:
    """How many helper drains should join the scheduled one (ADSYNC_INBOX_DRAINERS - 1 while a backlog waits).

    One process stores a few thousand hits a second. On PostgreSQL each helper takes a
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


@dataclass
class _Span:
    """The ids a drain looks at: up to the newest hit of its pass, from the oldest it saw waiting.

    Stored hits leave dead entries at the front of the inbox's primary key until VACUUM; a drain
    that scanned from the first id for every chunk walked over all of them each time (a
    quarter of its time after a few hundred thousand hits). Ids only grow, and every hit older
    than the oldest waiting one is gone, so each scan starts there."""

    floor: int = 0
    newest: int = 0


def _drain_chunk(result: DrainResult, span: _Span) -> int:
    """One transaction: take a chunk (on PostgreSQL of a lane no other drain holds), store it, delete it.

    SQLite has one writer at a time: there the chunk is simply the oldest waiting hits."""
    with transaction.atomic():
        hits = _take_chunk(span)
        errors: dict[int, str] = {}
        reports = []
        for hit in hits:
            try:
                reports.append(chunk.Report(hit, read(hit)))
            except Exception as exc:  # kept with its error, never dropped
                log.warning("inbox hit %s could not be read", hit.pk, exc_info=True)
                errors[hit.pk] = _error(exc)
        try:
            with transaction.atomic():
                chunk.store_chunk(reports)
        except Exception:  # stored again below, one at a time, each error kept
            log.warning("inbox: a chunk of %s hits was refused as a whole; storing them one by one", len(reports),
                        exc_info=True)
            errors.update(_store_one_by_one(reports))
        if errors:
            Hit.objects.filter(pk__in=list(errors)).update(
                error=Case(*(When(pk=pk, then=Value(error)) for pk, error in errors.items())))
        Hit.objects.filter(pk__any=[hit.pk for hit in hits if hit.pk not in errors]).delete()
        result.stored += len(hits) - len(errors)
        result.failed += len(errors)
    return len(hits)


def _store_one_by_one(reports: list[chunk.Report]) -> dict[int, str]:
    """Each hit with record.py in its own savepoint, as the drain did before chunks: the errors, by hit."""
    errors = {}
    for report in reports:
        try:
            with transaction.atomic():
                store(Hit.objects.get(pk=report.hit.pk), report.payload)
        except Exception as exc:  # kept with its error, never dropped
            log.exception("inbox hit %s could not be stored", report.hit.pk)
            errors[report.hit.pk] = _error(exc)
    return errors


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def _take_chunk(span: _Span) -> list[chunk.Received]:
    """The oldest waiting hits of the span; on PostgreSQL those of the oldest lane no other drain holds,
    which this transaction then holds (an empty list: every such lane is being stored by another drain)."""
    waiting = pending().filter(id__gte=span.floor, id__lte=span.newest).order_by("id")
    hits = waiting.values_list(*chunk.Received.COLUMNS)  # rows, not model instances: a chunk is hundreds
    if db_connection.vendor != "postgresql":
        return [chunk.Received(*row) for row in hits[:CHUNK]]
    seen = list(waiting.values_list("id", "lane")[:LANE_SCAN])
    if seen:
        span.floor = seen[0][0]
    lanes = dict.fromkeys(lane for _, lane in seen)
    with db_connection.cursor() as cursor:
        for lane in lanes:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [_LANE_LOCK, lane])
            if cursor.fetchone()[0]:
                # No row locks: the lane's advisory lock keeps every other drain off these hits, and
                # locking 500 rows would write each of them once more before the DELETE does.
                rows = list(hits.filter(lane=lane, id__gte=span.floor)[:CHUNK])
                if rows:  # else another drain emptied it since we looked: try the next
                    return [chunk.Received(*row) for row in rows]
    return []


def read(hit: Hit | chunk.Received) -> ClickPayload | ConversionPayload:
    """The report a hit holds, as the endpoint validated it (raises if it cannot be read)."""
    data = dict(hit.payload)
    if hit.kind == Hit.CLICK:
        return ClickPayload(**data)
    if data["value"] is not None:
        data["value"] = Decimal(data["value"])
    if data["occurred_at"] is not None:
        data["occurred_at"] = datetime.fromisoformat(data["occurred_at"])
    return ConversionPayload(**data)


def store(hit: Hit, payload: ClickPayload | ConversionPayload | None = None) -> None:
    """Record one hit with the server API's code, at its receipt time (the chunk's reference, and its fallback)."""
    payload = payload or read(hit)
    if isinstance(payload, ClickPayload):
        record.record_click(hit.site, payload, now=hit.received_at)
        return
    record.record_conversion(hit.site, payload, source=Conversion.SOURCE_BROWSER, now=hit.received_at,
                             read_pushes=False)
