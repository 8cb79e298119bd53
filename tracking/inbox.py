"""Accept a validated snippet report into the inbox, and drain the inbox into clicks and conversions.

`accept` is the web request's only write. `drain` (the worker: schedule `adsync:inbox` every
minute, and before every flush) stores each hit with the same code the server API uses
(tracking/ingest.py), at the hit's receipt time, and deletes it in the same transaction: a
crash leaves the hit in the inbox, and a hit drained twice finds its order id already stored.
A hit that raises keeps its error and waits for an operator (admin → inbox → Process again).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal

from django.db import connection as db_connection
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from adsync.models import Conversion, Site
from tracking import ingest
from tracking.models import Hit
from tracking.payloads import ClickPayload, ConversionPayload
from tracking.site_cache import forget

log = logging.getLogger(__name__)

CHUNK = 100  # hits per transaction


@dataclass
class DrainResult:
    stored: int = 0
    failed: int = 0

    def line(self) -> str:
        return f"inbox: {self.stored} stored, {self.failed} failed"


class SiteGone(Exception):
    """The site was deleted after this process cached it (tracking/site_cache.py)."""


def accept(site: Site, report: ClickPayload | ConversionPayload, now: datetime | None = None) -> str:
    """Queue a validated report (one INSERT); its receipt time becomes the click or conversion time.

    Written in SQL: on the busiest endpoint the ORM's insert machinery cost more than the insert.
    """
    kind = Hit.CLICK if isinstance(report, ClickPayload) else Hit.CONVERSION
    payload = asdict(report)
    if kind == Hit.CONVERSION:  # JSON keeps the value exact as text, and the time as ISO 8601
        payload["value"] = None if report.value is None else str(report.value)
        payload["occurred_at"] = report.occurred_at.isoformat() if report.occurred_at else None
    ops = db_connection.ops
    try:
        with db_connection.cursor() as cursor:
            cursor.execute(_INSERT, [site.pk, kind, ops.adapt_json_value(payload, None),
                                     ops.adapt_datetimefield_value(now or timezone.now())])
    except IntegrityError:  # the site's row is gone (a deferred foreign key fails here, at commit)
        forget(site.key)
        raise SiteGone(site.key) from None
    return kind


_INSERT = f"INSERT INTO {Hit._meta.db_table} (site_id, kind, payload, received_at, error) VALUES (%s, %s, %s, %s, '')"


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
    """django-q2 schedule `adsync:inbox`: at most 50 s, so runs a minute apart do not pile up."""
    return drain(seconds=50).line()


def pending() -> QuerySet[Hit]:
    """Hits waiting to be stored; failed ones wait for an operator instead."""
    return Hit.objects.filter(error="")


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
            except Exception as exc:  # noqa: BLE001 - kept with its error, never dropped
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
                             now=hit.received_at)
