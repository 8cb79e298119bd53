"""One diagnosis run: every check in order, stored as a DiagnosisRun, summarised on the connection.

Called by the `diagnose` job (after Connect/Reconnect, hourly for connections not checked for
DEBOUNCE, and by the card's "Check this connection"), and in the foreground by
`manage.py diagnose_connection`. The checks call Microsoft one after another; nothing is written
until they are done, except what a check's own call changes (a rotated refresh token, the goal
cache, the stored per-goal report), exactly as the flush or the goal refresh would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db.models import Max, Q
from django.utils import timezone

from adsync.diagnosis.checks import CHECKS
from adsync.diagnosis.context import Context
from adsync.models import Connection, DiagnosisRun
from adsync.models.diagnosis import worst

log = logging.getLogger(__name__)

# A run younger than this is not repeated by the schedule (or after Connect, unless forced); the
# hourly schedule therefore keeps every active card's checklist under a day old.
DEBOUNCE_HOURS = 20
DEBOUNCE = timedelta(hours=DEBOUNCE_HOURS)


def diagnose(connection: Connection, *, trigger: str = DiagnosisRun.SCHEDULE, requested_by: str = "", note: str = "",
             sleep: Callable[[float], None] = time.sleep) -> DiagnosisRun:
    """Run every check and store the run; the connection's summary then points at it."""
    ctx = Context(connection=connection, now=timezone.now(), sleep=sleep)
    results = [check(ctx) for check in CHECKS]
    run = DiagnosisRun.objects.create(
        connection=connection, trigger=trigger, requested_by=requested_by[:150], started_at=ctx.now,
        finished_at=timezone.now(), outcome=worst(r.outcome for r in results), note=note,
        checks=[r.to_json() for r in results])
    summary = run.summary()
    Connection.objects.filter(pk=connection.pk).update(diagnosis_summary=summary)
    connection.diagnosis_summary = summary
    log.info("diagnosis of connection %s: %s", connection.pk, run.counts_line())
    return run


def latest_run(connection: Connection) -> DiagnosisRun | None:
    return connection.diagnosis_runs.order_by("-started_at", "-id").first()


def recently_diagnosed(connection: Connection, now: datetime | None = None) -> bool:
    latest = connection.diagnosis_runs.aggregate(at=Max("started_at"))["at"]
    return latest is not None and latest > (now or timezone.now()) - DEBOUNCE


def due_connection_ids(now: datetime | None = None) -> list[int]:
    """Active connections never diagnosed, or not for DEBOUNCE: one query."""
    cutoff = (now or timezone.now()) - DEBOUNCE
    return list(Connection.objects.filter(status=Connection.ACTIVE).annotate(last=Max("diagnosis_runs__started_at"))
                .filter(Q(last__isnull=True) | Q(last__lte=cutoff)).order_by("pk").values_list("pk", flat=True))
