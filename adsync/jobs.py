"""Every background job adsync runs, when it runs, and the one way to queue one.

django-q2 runs these functions, by their dotted path `adsync.jobs.<name>`: on a schedule (the
rows `setup_schedules` writes from SCHEDULES, each named `adsync:*`), or queued by an admin
action or another job through `enqueue`, which waits for the current transaction to commit so a
job never runs before the rows it needs exist. Jobs take ids, never model instances: a pickled
Connection would carry its decrypted tokens into the queue. Each job is a thin shell over its
capability's service functions and returns one line for the task log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from croniter import croniter
from django.db import transaction
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task

from adsync.conf import conf
from adsync.connections import health, lifecycle, tokens
from adsync.diagnosis import fixes
from adsync.diagnosis import run as diagnosis
from adsync.insights import sync as insights_sync
from adsync.intake import inbox
from adsync.microsoft.errors import MicrosoftAdsError
from adsync.models import Connection, DiagnosisRun
from adsync.notify import alerts
from adsync.notify import digest as digests
from adsync.push import flush as flushing
from adsync.push import goals, transitions
from adsync.push import maintenance as housekeeping

log = logging.getLogger(__name__)

INSIGHTS_CRON = "0 5 * * *"  # 05:00 UTC (Q_CLUSTER time_zone is UTC)
# A failed insights sync that may succeed later is tried again after 1, 2, 4, 8 and 16 minutes.
INSIGHTS_RETRY_DELAYS = [timedelta(minutes=2 ** n) for n in range(5)]


def enqueue(job: Callable, *args, group: str = "", task_name: str | None = None, delay: timedelta | None = None,
            **kwargs) -> None:
    """Queue `job(*args, **kwargs)` for the worker once the current transaction commits (at once outside one).

    With `delay` the job runs that much later: a one-off django-q2 schedule named `task_name` (a
    later enqueue of the same name moves it instead of adding a second one).
    """
    path = f"{job.__module__}.{job.__qualname__}"
    if delay is not None:
        name = task_name or f"adsync:{job.__name__}:later"
        transaction.on_commit(lambda: _run_later(name, path, args, kwargs, delay))
        return
    options = {"group": group or f"adsync:{job.__name__}"}
    if task_name:
        options["task_name"] = task_name
    transaction.on_commit(lambda: async_task(path, *args, **options, **kwargs))


def _run_later(name: str, path: str, args: tuple, kwargs: dict, delay: timedelta) -> None:
    Schedule.objects.update_or_create(name=name, defaults={
        "func": path, "args": repr(tuple(args)), "kwargs": repr(kwargs), "schedule_type": Schedule.ONCE,
        "repeats": -1, "next_run": timezone.now() + delay})  # ONCE with repeats -1: deleted after it runs


# --- The flush and the inbox ----------------------------------------------------------------------

def flush(connection_ids: list[int] | None = None) -> str:
    """Every 2 minutes (and queued by admin actions): store the snippet's inbox, then send queued rows."""
    lines = [r.line() for r in run_flush(connection_ids)]
    for line in lines:
        log.info("flush %s", line)
    return "; ".join(lines) or "no active connection"


def run_flush(connection_ids: list[int] | None = None) -> list[flushing.FlushResult]:
    """The flush job's work, also run by `manage.py flush_conversions`.

    Storing the inbox first puts every conversion received before the flush into it (and only those:
    hits arriving as fast as they are stored cannot hold the flush back).
    """
    inbox.drain(received_before=True)
    results = flushing.flush_conversions(connection_ids)
    for result in results:
        alerts.flush_errors(result.connection_id, result.errors)  # over ADSYNC_ALERT_ERROR_THRESHOLD
    return results


def enqueue_flush(connection_ids: list[int]) -> None:
    enqueue(flush, connection_ids=connection_ids, group="adsync:flush-now")


def drain_inbox() -> str:
    """Every minute: store the snippet's inbox for at most DRAIN_SECONDS, with helpers beside a backlog."""
    for _ in range(inbox.helpers_wanted(conf.inbox_drainers)):
        enqueue(drain_inbox_helper, group="adsync:inbox-helpers")
    return drain_inbox_helper()


def drain_inbox_helper() -> str:
    """A bounded drain, queued beside the scheduled one while a backlog waits."""
    return inbox.drain(seconds=inbox.DRAIN_SECONDS).line()


# --- Connections ------------------------------------------------------------------------------------

def refresh_tokens() -> str:
    """Every ADSYNC_TOKEN_REFRESH_MINUTES: refresh tokens close to expiry while pushes wait, and weekly."""
    return lifecycle.refresh_due_tokens().line()


def refresh_token_now(connection_id: int) -> str:
    """The card's "Refresh token now": one forced refresh, the outcome on the card."""
    connection = Connection.objects.filter(pk=connection_id, status=Connection.ACTIVE).first()
    if connection is None:
        return f"connection {connection_id}: not active, not refreshed"
    try:
        tokens.refresh(connection, stale_access_token=connection.access_token)
    except MicrosoftAdsError as err:
        return f"connection {connection_id}: {err.describe()}"
    return f"connection {connection_id}: refreshed"


def connection_ready(connection_id: int) -> str:
    """After Connect, Reconnect or an account switch: held rows go out now, goals are fetched, insights synced,
    then the troubleshooting checklist runs (docs/diagnosis.md)."""
    connection = Connection.objects.filter(pk=connection_id, status=Connection.ACTIVE).first()
    if connection is None:
        return f"connection {connection_id}: not active"
    released = transitions.release_held(connection)
    goals_line = refresh_goals_now(connection_id)
    enqueue_insights([connection_id])
    # After the insights sync (queued first), so the checklist sees it.
    enqueue(diagnose, connection_id, DiagnosisRun.CONNECT, force=True, group="adsync:diagnosis")
    return (f"connection {connection_id}: {released} held row(s) released; goals: {goals_line}; insights and "
            f"diagnosis queued")


def refresh_goals_now(connection_id: int) -> str:
    """One connection's goal list (the card's "Refresh goal list")."""
    connection = Connection.objects.get(pk=connection_id)
    try:
        return f"{len(goals.refresh_goals(connection))} goal(s)"
    except MicrosoftAdsError as err:
        health.record_failure(connection, Connection.GOAL_REFRESH, err)
        return f"failed: {err.describe()}"


def refresh_goals() -> str:
    """Daily: every active connection's goal list; one failure does not stop the rest."""
    lines = [f"connection {pk}: {refresh_goals_now(pk)}"
             for pk in Connection.objects.filter(status=Connection.ACTIVE).values_list("pk", flat=True)]
    return "; ".join(lines) or "no active connection"


# --- Insights ---------------------------------------------------------------------------------------

def insights() -> str:
    """05:00 UTC: queue one sync per active connection, so each has its own timeout and failures stay apart."""
    ids = list(Connection.objects.filter(status=Connection.ACTIVE).values_list("pk", flat=True))
    enqueue_insights(ids)
    return f"queued the insights sync for {len(ids)} active connection(s)"


def enqueue_insights(connection_ids: list[int], days: int = insights_sync.DEFAULT_DAYS) -> None:
    for pk in connection_ids:
        enqueue(sync_insights, pk, days, group="adsync:insights", task_name=f"adsync:insights:{pk}")


def sync_insights(connection_id: int, days: int = insights_sync.DEFAULT_DAYS, attempt: int = 0) -> str:
    """One connection's insights sync; the outcome is on the card. A failure Microsoft or the network may
    get over (timeout, 5xx, a report still pending, too many reports at once) is retried with backoff,
    within minutes (INSIGHTS_RETRY_DELAYS), not at the next day's run."""
    connection = Connection.objects.select_related("site").filter(pk=connection_id).first()
    if connection is None:
        return f"connection {connection_id}: skipped: it no longer exists"
    result = insights_sync.sync_insights(connection, days)
    if not (result.retryable and attempt < len(INSIGHTS_RETRY_DELAYS)):
        return result.line()
    delay = INSIGHTS_RETRY_DELAYS[attempt]
    enqueue(sync_insights, connection_id, days, attempt + 1, task_name=f"adsync:insights-retry:{connection_id}",
            delay=delay)
    return f"{result.line()}; retry {attempt + 1} of {len(INSIGHTS_RETRY_DELAYS)} in {delay.seconds // 60} min"


# --- Diagnosis (docs/diagnosis.md) ------------------------------------------------------------------

def diagnose(connection_id: int, trigger: str = DiagnosisRun.SCHEDULE, force: bool = False, requested_by: str = "",
             note: str = "") -> str:
    """One connection's troubleshooting checklist, stored and shown on the card; skipped when the last run is
    younger than diagnosis.DEBOUNCE unless forced (Check this connection, Connect, a goal created)."""
    connection = Connection.objects.select_related("site").filter(pk=connection_id).first()
    if connection is None:
        return f"connection {connection_id}: skipped: it no longer exists"
    if not force and diagnosis.recently_diagnosed(connection):
        return f"connection {connection_id}: skipped: checked less than {diagnosis.DEBOUNCE_HOURS} hours ago"
    run = diagnosis.diagnose(connection, trigger=trigger, requested_by=requested_by, note=note)
    return f"connection {connection_id}: {run.counts_line()}"


def diagnose_due() -> str:
    """Hourly: queue the checklist of every active connection not checked for diagnosis.DEBOUNCE (20 h)."""
    ids = diagnosis.due_connection_ids()
    for pk in ids:
        enqueue(diagnose, pk, group="adsync:diagnosis", task_name=f"adsync:diagnosis:{pk}")
    return f"queued the diagnosis of {len(ids)} connection(s)"


def create_goal(connection_id: int, name: str, window_minutes: int, count_type: str, requested_by: str = "") -> str:
    """The checklist's one-click fix: create a mapped, missing offline goal, then check the connection again."""
    connection = Connection.objects.select_related("site").filter(pk=connection_id).first()
    if connection is None:
        return f"connection {connection_id}: skipped: it no longer exists"
    outcome = fixes.create_goal(connection, name, window_minutes, count_type)
    diagnosis.diagnose(connection, trigger=DiagnosisRun.GOAL_CREATED, requested_by=requested_by, note=outcome.note())
    return f"connection {connection_id}: {outcome.note()}"


# --- Housekeeping and notifications -----------------------------------------------------------------

def maintenance() -> str:
    """Daily: expire rows Microsoft can no longer accept, purge identifiers past retention."""
    return housekeeping.run_maintenance()


def digest() -> str:
    """ADSYNC_DIGEST_CRON (07:00 UTC): the sync digest for staff who opted in."""
    outcome = digests.send_digest()
    log.info("sync digest: %s", outcome.line())
    return outcome.line()


# --- Schedules ----------------------------------------------------------------------------------------

def schedules() -> list[dict]:
    """One row per scheduled job; `setup_schedules` writes them (update_or_create by name)."""
    def job(name: str, func: Callable, **timing) -> dict:
        return {"name": name, "func": f"{__name__}.{func.__name__}", **timing}

    return [
        job("adsync:flush", flush, schedule_type=Schedule.MINUTES, minutes=conf.flush_minutes),
        # The snippet's hits, accepted with 202, become clicks, conversions and sync-log rows.
        job("adsync:inbox", drain_inbox, schedule_type=Schedule.MINUTES, minutes=conf.inbox_minutes),
        # Refresh before expiry while pushes wait, and weekly even when idle (90-day inactivity).
        job("adsync:refresh-tokens", refresh_tokens, schedule_type=Schedule.MINUTES,
            minutes=conf.token_refresh_minutes),
        # Microsoft may drop conversions for unknown goals silently: keep the cache fresh.
        job("adsync:goals", refresh_goals, schedule_type=Schedule.DAILY),
        job("adsync:maintenance", maintenance, schedule_type=Schedule.DAILY),
        # The troubleshooting checklist: hourly, each active connection once its last run is 20 h old.
        job("adsync:diagnosis", diagnose_due, schedule_type=Schedule.HOURLY),
        # Campaign performance, daily at 05:00 UTC: one queued task per active connection.
        job("adsync:insights", insights, schedule_type=Schedule.CRON, cron=INSIGHTS_CRON),
        # The sync digest for staff who opted in (docs/notifications.md), default 07:00 UTC.
        job("adsync:digest", digest, schedule_type=Schedule.CRON, cron=conf.digest_cron),
    ]


def next_cron_run(cron: str, now: datetime | None = None) -> datetime:
    """The next time `cron` matches, evaluated in UTC."""
    start = (now or timezone.now()).astimezone(dt_timezone.utc)
    return croniter(cron, start).get_next(datetime)


def ensure_schedules() -> list[tuple[str, bool]]:
    """update_or_create each schedule; a changed definition gets its next_run reset."""
    outcome = []
    for spec in schedules():
        name = spec.pop("name")
        existing = Schedule.objects.filter(name=name).first()
        changed = existing is None or any(getattr(existing, k) != v for k, v in spec.items())
        schedule, created = Schedule.objects.update_or_create(name=name, defaults=spec)
        if changed and spec["schedule_type"] == Schedule.CRON:
            # A cron's next run is its next matching time in UTC, not "now"; save() computes it
            # only for new rows, and in Django's TIME_ZONE rather than the cluster's UTC.
            Schedule.objects.filter(pk=schedule.pk).update(next_run=next_cron_run(spec["cron"]))
        elif changed and not created:
            # save() computes next_run only for new rows (django-q2 pitfall).
            Schedule.objects.filter(pk=schedule.pk).update(next_run=timezone.now())
        outcome.append((name, created))
    return outcome
