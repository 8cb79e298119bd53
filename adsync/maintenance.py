"""Daily housekeeping: expire rows Microsoft can no longer accept, purge old identifiers.

Microsoft accepts conversions up to 90 days old and advises keeping click ids 90 days
(reference §1.4, §8); adsync keeps identifiers no longer than settings.ADSYNC_RETENTION_DAYS.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from adsync.models import ADSYNC_ERROR_PREFIX, Click, Conversion, Push

EXPIRED_REASON = ("No msclkid arrived before Microsoft's 90-day window closed: this conversion can no longer be "
                  "attributed. Check auto-tagging and that the snippet is on every landing page.")


def expire_pending_identity() -> int:
    cutoff = timezone.now() - timedelta(days=90)
    return Push.objects.filter(status=Push.PENDING_IDENTITY, conversion_time__lt=cutoff).update(
        status=Push.ERROR, error_code=None, error_symbol=ADSYNC_ERROR_PREFIX + "identity_expired",
        error_message=EXPIRED_REASON, updated_at=timezone.now(),
    )


def purge_identifiers() -> dict[str, int]:
    """Delete clicks and blank click ids and hashes older than the retention window."""
    cutoff = timezone.now() - timedelta(days=settings.ADSYNC_RETENTION_DAYS)
    clicks, _ = Click.objects.filter(clicked_at__lt=cutoff).delete()
    conversions = Conversion.objects.filter(occurred_at__lt=cutoff).exclude(
        msclkid="", hashed_email="", hashed_phone="", visitor_id="").update(
        msclkid="", hashed_email="", hashed_phone="", visitor_id="")
    pushes = Push.objects.filter(conversion_time__lt=cutoff).exclude(
        msclkid="", hashed_email="", hashed_phone="").exclude(status=Push.QUEUED).update(
        msclkid="", hashed_email="", hashed_phone="")
    return {"clicks": clicks, "conversions": conversions, "pushes": pushes}


def run_maintenance() -> str:
    """Scheduled daily (adsync:maintenance)."""
    expired = expire_pending_identity()
    purged = purge_identifiers()
    return (f"{expired} pending_identity row(s) expired; purged {purged['clicks']} click(s), identifiers of "
            f"{purged['conversions']} conversion(s) and {purged['pushes']} sync-log row(s)")
