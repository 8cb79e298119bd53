"""Client-side request limit per connection (account), kept as row state so every worker shares it.

Microsoft publishes no number (docs/microsoft-api.md#rate-limits: per user, a 60-second sliding
window, 117/429); vendors quote 1,000 requests a minute per account, our default. A fixed
one-minute window on the connection row, advanced with conditional UPDATEs: no lock, one or two
queries. Microsoft's own throttling pauses the account for every worker (`pause`).
"""

from datetime import timedelta

from django.db.models import F, Q
from django.utils import timezone

from adsync.conf import conf
from adsync.models import Connection

WINDOW = timedelta(seconds=60)
# Microsoft's throttle (117 / HTTP 429): its Retry-After when it sends one, as given, shorter or longer
# than a minute; 60 s without one ("resubmit after 60 seconds", docs/microsoft-api.md#rate-limits).
# Bounded both ways: at least a second (no busy loop on "Retry-After: 0"), at most 15 minutes (a
# mistaken header must not stop an account's uploads for hours; the next flush asks again anyway).
THROTTLE_DEFAULT = timedelta(seconds=60)
THROTTLE_MIN = timedelta(seconds=1)
THROTTLE_MAX = timedelta(minutes=15)


def acquire_request_slot(connection: Connection) -> bool:
    """Count one request against the connection's window; False when the window is full.

    Two tries: a worker whose window reset lost the race to another worker's reset (the same
    expired window, two concurrent UPDATEs) counts itself in the window the other one opened.
    """
    now = timezone.now()
    rows = Connection.objects.filter(pk=connection.pk)
    for _ in range(2):
        if rows.filter(rate_window_start__gt=now - WINDOW,
                       rate_window_count__lt=conf.requests_per_minute).update(
                rate_window_count=F("rate_window_count") + 1):
            return True
        if rows.filter(Q(rate_window_start__isnull=True) | Q(rate_window_start__lte=now - WINDOW)).update(
                rate_window_start=now, rate_window_count=1):
            return True
    return False


def throttle_wait(retry_after: float | None) -> timedelta:
    """How long to leave an account alone after Microsoft throttled it."""
    if retry_after is None:
        return THROTTLE_DEFAULT
    return min(THROTTLE_MAX, max(THROTTLE_MIN, timedelta(seconds=retry_after)))


def pause(connection: Connection, until) -> None:
    """Microsoft throttled the account (117 / HTTP 429): no request for it before `until`, from any worker."""
    Connection.objects.filter(pk=connection.pk).update(throttled_until=until)
    connection.throttled_until = until
