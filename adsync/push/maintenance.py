"""Daily housekeeping: expire rows Microsoft can no longer accept, purge old identifiers.

Microsoft accepts conversions up to 90 days old and advises keeping click ids 90 days
(docs/microsoft-api.md#time-rules and #msclkid); adsync keeps identifiers no longer than
ADSYNC_RETENTION_DAYS. Run by the `adsync:maintenance` job (adsync/jobs.py).
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from adsync.conf import conf
from adsync.models import Click, Conversion, Hit, Push
from adsync.push import transitions


def purge_identifiers() -> dict[str, int]:
    """Delete clicks and inbox hits (failed ones included) and blank click ids and hashes older than the
    retention window."""
    cutoff = timezone.now() - timedelta(days=conf.retention_days)
    clicks, _ = Click.objects.filter(clicked_at__lt=cutoff).delete()
    # A hit that old can no longer become a conversion Microsoft accepts; it still holds a visitor and hashes.
    hits, _ = Hit.objects.filter(received_at__lt=cutoff).delete()
    conversions = Conversion.objects.filter(occurred_at__lt=cutoff).exclude(
        msclkid="", hashed_email="", hashed_phone="", visitor_id="").update(
        msclkid="", hashed_email="", hashed_phone="", visitor_id="")
    pushes = Push.objects.filter(conversion_time__lt=cutoff).exclude(
        msclkid="", hashed_email="", hashed_phone="").exclude(status=Push.QUEUED).update(
        msclkid="", hashed_email="", hashed_phone="")
    return {"clicks": clicks, "hits": hits, "conversions": conversions, "pushes": pushes}


def run_maintenance() -> str:
    """Expire what can no longer be sent, then purge identifiers; a line for the task log."""
    expired = transitions.expire_pending_identity()
    purged = purge_identifiers()
    return (f"{expired} pending_identity row(s) expired; purged {purged['clicks']} click(s), {purged['hits']} inbox "
            f"hit(s), identifiers of "
            f"{purged['conversions']} conversion(s) and {purged['pushes']} sync-log row(s)")
