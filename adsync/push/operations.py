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

from django.db import transaction
from django.utils import timezone

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
    now = timezone.now().replace(microsecond=0)
    conversion = Conversion.objects.create(
        site=connection.site, event_name=mapping.event_name, order_id=f"adsync-test-{uuid.uuid4().hex[:12]}",
        currency=connection.site.default_currency, msclkid=TEST_MSCLKID, occurred_at=now - timedelta(seconds=5),
        source=Conversion.SOURCE_ADMIN,
    )
    transitions.create_pushes(conversion, [mapping])
    return conversion.pushes.get(connection=connection, kind=Push.CONVERSION)


@dataclass
class DryRunRow:
    push: Push
    verdict: guards.Verdict
    payload: dict


def validate(pushes) -> list[DryRunRow]:
    """Build and check payloads exactly as the flush would, without sending or changing anything."""
    books: dict[int, GoalBook] = {}
    pushes = list(pushes.select_related("connection"))
    originals = guards.Originals.load(pushes)
    rows = []
    for push in pushes:
        book = books.get(push.connection_id) or books.setdefault(push.connection_id, GoalBook(push.connection))
        rows.append(DryRunRow(push, guards.preflight(push, book, originals=originals), push.as_request_item()))
    return rows


def summarize(rows: list[DryRunRow]) -> list[str]:
    """Human lines: how many would be sent, held or refused, and why."""
    counts = Counter(row.verdict.action for row in rows)
    cancelled = f", {counts[guards.CANCEL]} cancelled" if counts[guards.CANCEL] else ""
    lines = [f"{counts[guards.SEND]} would be sent, {counts[guards.HOLD]} held, {counts[guards.FAIL]} refused "
             f"by adsync's checks{cancelled} (nothing was sent)."]
    reasons = Counter(row.verdict.reason for row in rows if row.verdict.action != guards.SEND)
    lines += [f"{n} × {reason}" for reason, n in reasons.most_common(10)]
    return lines


def due_rows(connection: Connection):
    return Push.objects.due().filter(connection=connection)
