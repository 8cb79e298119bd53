"""Late identity: a click learned after the conversion turns its pending_identity rows into sends.

An offline sale may arrive keyed by order, email or visitor id before the landing report or
lead form that ties that person to an msclkid. When such a click becomes known, conversions
of the same site and person that happened after the click (and within 90 days of it) take
its msclkid and their pending_identity pushes are queued.

Who is "the same person" depends on who says so (docs/security.md#attribution-theft). Email and
phone are not secret: anyone can put a victim's email in a browser report. So they tie a click to
a conversion only when both reports are authenticated (the server API, an admin test). A browser
report ties only its own visitor id, a random first-party cookie no other page can read.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Q

from adsync.models import Conversion, Site
from adsync.push import transitions

WINDOW = timedelta(days=90)


AUTHENTICATED_SOURCES = (Conversion.SOURCE_SERVER, Conversion.SOURCE_ADMIN)


def late_match_identity(conversion: Conversion) -> dict[str, str]:
    """What of `conversion` may tie its click to other conversions: email and phone only if it is authenticated."""
    identity = {"visitor_id": conversion.visitor_id}
    if conversion.source in AUTHENTICATED_SOURCES:
        identity.update(hashed_email=conversion.hashed_email, hashed_phone=conversion.hashed_phone)
    return identity


def attach_click(site: Site, msclkid: str, click_time: datetime, *, visitor_id: str = "",
                 hashed_email: str = "", hashed_phone: str = "") -> int:
    """Queue the pending conversions this click explains; returns how many pushes were queued.

    `hashed_email` and `hashed_phone` come from an authenticated report (late_match_identity) and
    claim only authenticated conversions: a browser conversion is claimed by its visitor id alone.
    """
    person = Q(visitor_id=visitor_id) if visitor_id else Q()
    for field, value in (("hashed_email", hashed_email), ("hashed_phone", hashed_phone)):
        if value:
            person |= Q(**{field: value}, source__in=AUTHENTICATED_SOURCES)
    if not msclkid or not person:
        return 0
    # Conversion times are whole seconds (as Microsoft compares them): a conversion in the
    # same second as the click counts as after it.
    after_click = Q(occurred_at__gte=click_time.replace(microsecond=0), occurred_at__lte=click_time + WINDOW)
    ids = list(Conversion.objects.filter(person, after_click, site=site, msclkid="").values_list("id", flat=True))
    if not ids:
        return 0
    Conversion.objects.filter(pk__in=ids, msclkid="").update(msclkid=msclkid, click_time=click_time)
    return transitions.identify(ids, msclkid, click_time)
