"""Late identity: a click learned after the conversion turns its pending_identity rows into sends.

An offline sale may arrive keyed by order, email or visitor id before the landing report or
lead form that ties that person to an msclkid. When such a click becomes known, conversions
of the same site and person that happened after the click (and within 90 days of it) take
its msclkid and their pending_identity pushes are queued.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from adsync.models import Conversion, Push, Site

WINDOW = timedelta(days=90)


def attach_click(site: Site, msclkid: str, click_time: datetime, *, visitor_id: str = "",
                 hashed_email: str = "", hashed_phone: str = "") -> int:
    """Queue the pending conversions this click explains; returns how many pushes were queued."""
    person = Q()
    for field, value in (("visitor_id", visitor_id), ("hashed_email", hashed_email), ("hashed_phone", hashed_phone)):
        if value:
            person |= Q(**{field: value})
    if not msclkid or not person:
        return 0
    # Conversion times are whole seconds (as Microsoft compares them): a conversion in the
    # same second as the click counts as after it.
    after_click = Q(occurred_at__gte=click_time.replace(microsecond=0), occurred_at__lte=click_time + WINDOW)
    ids = list(Conversion.objects.filter(person, after_click, site=site, msclkid="").values_list("id", flat=True))
    if not ids:
        return 0
    Conversion.objects.filter(pk__in=ids, msclkid="").update(msclkid=msclkid, click_time=click_time)
    now = timezone.now()
    pushes = list(Push.objects.filter(conversion_id__in=ids, status=Push.PENDING_IDENTITY))
    for push in pushes:
        push.msclkid, push.click_time, push.status = msclkid, click_time, Push.QUEUED
        push.next_attempt_at = push.updated_at = now
        push.dedupe_key = push.compute_dedupe_key()
    pushes = _without_duplicates(pushes)
    Push.objects.bulk_update(pushes, ["msclkid", "click_time", "status", "next_attempt_at", "updated_at", "dedupe_key"],
                             batch_size=500)
    return len(pushes)


def _without_duplicates(pushes: list[Push]) -> list[Push]:
    """Drop pushes whose (connection, goal, click, second) is already taken, by a stored push or an earlier one here.

    Microsoft would ignore such a push as a duplicate, and saving it would break the unique
    dedupe key (a 500 for the request that taught us the click): it stays pending_identity.
    """
    taken = set(Push.objects.filter(dedupe_key__in=[p.dedupe_key for p in pushes]).values_list("dedupe_key", flat=True))
    kept = []
    for push in pushes:
        if push.dedupe_key not in taken:
            taken.add(push.dedupe_key)
            kept.append(push)
    return kept
