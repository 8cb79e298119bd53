"""Staff operations behind admin actions and commands: test conversion, dry run.

Admin actions stay thin: they call these functions and queue any network work through
adsync/jobs.py, never calling Microsoft inside the request. (Replay is a state change:
adsync/push/transitions.py.)
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from math import ceil

from django.db import transaction
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from adsync.conf import conf
from adsync.formats import count
from adsync.models import Connection, Conversion, GoalMapping, Push
from adsync.push import guards, transitions
from adsync.push.goals import GoalBook

TEST_MSCLKID = "test_msclkid_123"


@transaction.atomic
def send_test_conversion(mapping: GoalMapping) -> Push:
    """A conversion with Microsoft's fake test click id, pushed for this one mapping.

    Microsoft rejects the click id; the attempt and its verbatim error in the sync log prove the
    wiring (account, token, Goal Name) end to end, as the seed's "test offline conversion" does.
    The caller queues the flush (jobs.enqueue_flush).
    """
    connection = mapping.connection
    at = timezone.now().replace(microsecond=0) - timedelta(seconds=5)
    # Microsoft keys a conversion by click id, goal and second: a test sent again within the same second
    # (a double click) takes the next second, or it would be a duplicate and get no sync-log row.
    last = Push.objects.filter(connection=connection, goal_name=mapping.goal_name, msclkid=TEST_MSCLKID,
                               conversion_time__gte=at).aggregate(last=Max("conversion_time"))["last"]
    conversion = Conversion.objects.create(
        site=connection.site, event_name=mapping.event_name, order_id=f"adsync-test-{uuid.uuid4().hex[:12]}",
        currency=connection.site.default_currency, msclkid=TEST_MSCLKID,
        occurred_at=max(at, last + timedelta(seconds=1)) if last else at, source=Conversion.SOURCE_ADMIN,
    )
    transitions.create_pushes(conversion, [mapping])
    return conversion.pushes.get(connection=connection, kind=Push.CONVERSION)


SKIP = "skip"  # not part of the next flush at all (the verdict's reason says why)


@dataclass
class DryRunRow:
    push: Push
    verdict: guards.Verdict
    payload: dict | None


def _skip(reason: str) -> guards.Verdict:
    return guards.Verdict(SKIP, reason=reason)


_NOT_QUEUED = {
    Push.SENT: "already sent",
    Push.PENDING_IDENTITY: "pending_identity: no msclkid, so Microsoft cannot match it (waits for a click)",
    Push.ERROR: "error: final, not retried (Replay re-queues it)",
    Push.SKIPPED_NO_CONSENT: "skipped_no_consent: the visitor gave no consent, never sent",
    Push.CANCELLED: "cancelled (retracted before sending, or erased): never sent",
}


def verdict_for(push: Push, book: GoalBook, now, originals: guards.Originals | None = None) -> guards.Verdict:
    """What the next flush would do with this row, and why, exactly as flush_connection decides it."""
    connection = push.connection
    if push.status != Push.QUEUED:
        return _skip(_NOT_QUEUED.get(push.status, push.status))
    if connection.status != Connection.ACTIVE:
        return _skip(f"the connection is {connection.get_status_display()}: queued rows wait for a Connect or "
                     f"Reconnect")
    if connection.throttled_until and connection.throttled_until > now:
        return _skip("the account is throttled by Microsoft: not due until the pause ends")
    if push.claimed_until and push.claimed_until > now:
        return _skip("being sent by a flush right now")
    if push.next_attempt_at > now:
        why = "held by adsync" if push.error_symbol == guards.HELD_SYMBOL else "waiting to retry after a failure"
        return _skip(f"not due yet: {why}")
    return guards.preflight(push, book, now, originals)


def validate(pushes) -> list[DryRunRow]:
    """Build and check payloads exactly as the flush would, without sending or changing anything."""
    books: dict[int, GoalBook] = {}
    now = timezone.now()
    pushes = list(pushes.select_related("connection"))
    originals = guards.Originals.load(pushes)
    rows = []
    for push in pushes:
        book = books.get(push.connection_id) or books.setdefault(push.connection_id, GoalBook(push.connection))
        verdict = verdict_for(push, book, now, originals)
        rows.append(DryRunRow(push, verdict, push.as_request_item() if verdict.action == guards.SEND else None))
    return rows


def summarize(rows: list[DryRunRow]) -> list[str]:
    """Human lines: how many the next flush would send (and in how many requests), and why the rest would not go."""
    sending: Counter[int] = Counter(row.push.connection_id for row in rows if row.verdict.action == guards.SEND)
    sent = sum(sending.values())
    requests = sum(ceil(n / min(conf.batch_size, 1000)) for n in sending.values())
    rest = len(rows) - sent
    lines = [f"{count(sent, 'row')} would be sent ({count(requests, 'request')} to Microsoft); "
             f"{count(rest, 'row')} would not go. Nothing was sent."]
    reasons = Counter(_why(row.verdict) for row in rows if row.verdict.action != guards.SEND)
    lines += [f"{n} × {reason}" for reason, n in reasons.most_common(10)]
    return lines


def _why(verdict: guards.Verdict) -> str:
    if verdict.action == guards.FAIL:
        return f"refused by adsync's pre-send check ({verdict.symbol}): {verdict.reason}"
    if verdict.action == guards.HOLD:
        return f"held by adsync: {verdict.reason}"
    if verdict.action == guards.CANCEL:
        return f"cancelled by adsync ({verdict.symbol}): {verdict.reason}"
    return verdict.reason


def due_rows(connection: Connection):
    return Push.objects.due().filter(connection=connection)


def dry_run(connection: Connection) -> list[str]:
    """`flush_conversions --dry-run` for one connection: the due rows checked one by one, then what waits."""
    if connection.status != Connection.ACTIVE:
        waiting = connection.pushes.filter(status=Push.QUEUED).count()
        return [f"Not flushed: the connection is {connection.get_status_display()}; {count(waiting, 'queued row')} "
                f"wait for a Connect or Reconnect. Nothing was sent."]
    lines = summarize(validate(due_rows(connection)))
    return lines + [f"Besides: {queue_summary(connection)}"]


def queue_summary(connection: Connection) -> str:
    """"3 queued (1 due now, 2 waiting until 14:05 UTC), 2 pending_identity": what waits after a flush."""
    now = timezone.now()
    queued = connection.pushes.filter(status=Push.QUEUED)
    figures = queued.aggregate(
        total=Count("id"), due=Count("id", filter=Q(next_attempt_at__lte=now)),
        held=Count("id", filter=Q(next_attempt_at__gt=now, error_symbol=guards.HELD_SYMBOL)),
        until=Max("next_attempt_at", filter=Q(next_attempt_at__gt=now)),
        first=Min("next_attempt_at", filter=Q(next_attempt_at__gt=now)))
    pending = connection.pushes.filter(status=Push.PENDING_IDENTITY).count()
    waiting = figures["total"] - figures["due"]
    parts = [f"{count(figures['due'], 'row')} due now"]
    if waiting:
        span = f"{figures['first']:%H:%M} UTC" if figures["first"] == figures["until"] else \
            f"between {figures['first']:%H:%M} and {figures['until']:%Y-%m-%d %H:%M} UTC"
        held = f", {figures['held']} held by adsync" if figures["held"] else ""
        parts.append(f"{waiting} waiting until {span}{held}")
    return f"{figures['total']} queued ({', '.join(parts)}), {pending} pending_identity"
