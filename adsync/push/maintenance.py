"""Daily housekeeping: expire rows Microsoft can no longer accept, purge old identifiers.

Microsoft accepts conversions up to 90 days old and advises keeping click ids 90 days
(docs/microsoft-api.md#time-rules and #msclkid); adsync keeps identifiers no longer than
ADSYNC_RETENTION_DAYS. Run by the `adsync:maintenance` job (adsync/jobs.py).

The purge writes in bounded batches, each its own transaction: one statement over millions of
rows would hold a snapshot for minutes, during which autovacuum can reclaim none of the rows it
leaves dead, and the drain's and flush's index scans would wade through them
(docs/performance.md#no-cliff-after-deletes).
"""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.db.models import Max, Min, Model, Q, QuerySet
from django.utils import timezone

from adsync.conf import conf
from adsync.models import Click, Conversion, Hit, Push
from adsync.push import transitions

BATCH = 5000  # rows per statement and transaction


def purge_identifiers(batch: int = BATCH) -> dict[str, int]:
    """Delete clicks and inbox hits (failed ones included) and blank click ids and hashes older than the
    retention window."""
    cutoff = timezone.now() - timedelta(days=conf.retention_days)
    clicks = _delete_in_batches(Click.objects.filter(clicked_at__lt=cutoff), batch)
    # A hit that old can no longer become a conversion Microsoft accepts; it still holds a visitor and hashes.
    hits = _delete_in_batches(Hit.objects.filter(received_at__lt=cutoff), batch)
    conversions = _update_by_id_ranges(
        Conversion, Q(occurred_at__lt=cutoff) & ~Q(msclkid="", hashed_email="", hashed_phone="", visitor_id=""),
        batch, msclkid="", hashed_email="", hashed_phone="", visitor_id="")
    pushes = _update_by_id_ranges(
        Push, Q(conversion_time__lt=cutoff) & ~Q(msclkid="", hashed_email="", hashed_phone="") & ~Q(status=Push.QUEUED),
        batch, msclkid="", hashed_email="", hashed_phone="")
    return {"clicks": clicks, "hits": hits, "conversions": conversions, "pushes": pushes}


def _delete_in_batches(rows: QuerySet, batch: int) -> int:
    """DELETE the first `batch` matching rows (found by the query's own index), again until none match."""
    total = 0
    while True:
        with transaction.atomic():
            ids = list(rows.values_list("pk", flat=True)[:batch])
            if not ids:
                return total
            total += rows.model.objects.filter(pk__in=ids).delete()[0]


def _update_by_id_ranges(model: type[Model], condition: Q, batch: int, **changes) -> int:
    """UPDATE the matching rows one primary-key range at a time: no index on the time column is
    needed (none is kept just for a daily job), and each range is a short index scan."""
    bounds = model.objects.aggregate(low=Min("pk"), high=Max("pk"))
    if bounds["low"] is None:
        return 0
    total = 0
    for start in range(bounds["low"], bounds["high"] + 1, batch):
        with transaction.atomic():
            total += model.objects.filter(condition, pk__gte=start, pk__lt=start + batch).update(**changes)
    return total


def run_maintenance() -> str:
    """Expire what can no longer be sent, then purge identifiers; a line for the task log."""
    expired = transitions.expire_pending_identity()
    purged = purge_identifiers()
    return (f"{expired} pending_identity row(s) expired; purged {purged['clicks']} click(s), {purged['hits']} inbox "
            f"hit(s), identifiers of "
            f"{purged['conversions']} conversion(s) and {purged['pushes']} sync-log row(s)")
