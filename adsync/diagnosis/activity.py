"""Checks 7-8, adsync's own work: when the flush and the insights sync last ran and what failed, and the
error classes of the last 24 hours (the digest's grouping) with one verbatim sample each.
"""

from __future__ import annotations

from datetime import timedelta

from adsync.conf import conf
from adsync.connections import health
from adsync.diagnosis.context import Context, ago, result
from adsync.links import card_url, sync_log_url
from adsync.microsoft.errors import Kind, remedy_hint
from adsync.models import CheckResult, Connection, Push
from adsync.models.diagnosis import FAIL, PASS, WARN
from adsync.notify.digest import error_classes

# The flush runs every ADSYNC_FLUSH_MINUTES; this many intervals without one means the worker is down.
FLUSH_MISSED_RUNS = 5
CONNECTION_LEVEL_KINDS = {Kind.ACCOUNT, Kind.NO_ACCESS, Kind.RECONNECT, Kind.AUTH}


# --- 7. Flush and insights --------------------------------------------------------------------------

def check_sync_activity(ctx: Context) -> CheckResult:
    """When the last flush and the last insights sync ran, how long ago, and what failed."""
    conn, now = ctx.connection, ctx.now
    conn.refresh_from_db(fields=["last_flush_at", "last_insights_sync_at", "last_error", "last_error_at",
                                 "last_error_operation", "last_error_kind", "last_error_code"])
    flush_every = timedelta(minutes=conf.flush_minutes)
    due = Push.objects.due(now).filter(connection=conn)
    oldest_due = due.order_by("next_attempt_at").values_list("next_attempt_at", flat=True).first()
    evidence = [f"Last flush: {ago(conn.last_flush_at, now)}; schedule every {conf.flush_minutes} minute(s).",
                f"Rows waiting to be sent now: {due.count()}" + (f", the oldest due since {ago(oldest_due, now)}."
                                                                  if oldest_due else ".")]
    evidence.append(f"Last insights sync: {ago(conn.last_insights_sync_at, now)}.")
    failure = health.last_failure(conn)
    if failure and conn.last_error_at and now - conn.last_error_at <= timedelta(hours=24):
        evidence.append(f"Last failure: {failure}")
    stalled = oldest_due is not None and now - oldest_due > flush_every * FLUSH_MISSED_RUNS
    if stalled and (conn.last_flush_at is None or now - conn.last_flush_at > flush_every * FLUSH_MISSED_RUNS):
        return result("sync_activity", FAIL, "Rows are due but no flush ran for this connection recently: the worker "
                      "(manage.py qcluster) is not running or the schedules are missing.", evidence,
                      remedy="Start the worker (manage.py qcluster) and run manage.py setup_schedules.",
                      link=sync_log_url(connection_id=conn.pk, status=Push.QUEUED), link_label="queued rows")
    if conn.last_error_operation == Connection.UPLOAD and conn.last_error_at and \
            now - conn.last_error_at <= timedelta(hours=24) and (conn.last_flush_at is None
                                                                 or conn.last_flush_at <= conn.last_error_at):
        return result("sync_activity", WARN, "The last upload failed; its rows stay queued and are retried.", evidence,
                      remedy=_hint(conn) or "adsync retries automatically.",
                      link=sync_log_url(connection_id=conn.pk), link_label="the sync log")
    if health.is_stale(conn, now):
        reason = "never ran" if conn.last_insights_sync_at is None else "has not succeeded for 24 hours"
        return result("sync_activity", WARN, f"The insights sync {reason}.", evidence,
                      remedy="Use the action “Resync now”; if it fails again, its reason shows on the card.",
                      link=card_url(conn.pk), link_label="the card")
    return result("sync_activity", PASS, f"Flushed {ago(conn.last_flush_at, now)}; insights synced "
                  f"{ago(conn.last_insights_sync_at, now)}.", evidence)


def _hint(conn: Connection) -> str:
    code = conn.last_error_code
    return remedy_hint(int(code) if code.isdigit() else None, conn.last_error_kind or None)


# --- 8. Errors of the last 24 hours -----------------------------------------------------------------

def check_errors(ctx: Context) -> CheckResult:
    """The error classes of the last 24 hours (the digest's grouping), one verbatim sample each."""
    conn, now = ctx.connection, ctx.now
    classes = error_classes(now - timedelta(hours=24), now, [conn.pk]).get(conn.pk, [])
    link = sync_log_url(connection_id=conn.pk, status=Push.ERROR)
    if not classes:
        return result("errors", PASS, "No sync-log row became an error in the last 24 hours.")
    evidence = []
    for cls in classes:
        sample = cls.samples[0] if cls.samples else None
        said = f" — {cls.source} said: “{sample.message}”" if sample else ""
        tracking = f" (TrackingId {sample.tracking_id})" if sample and sample.tracking_id else ""
        evidence.append(f"{cls.label} ({cls.kind}): {cls.count} row(s){said}{tracking}")
    total = sum(c.count for c in classes)
    top = classes[0]
    outcome = FAIL if any(c.kind in CONNECTION_LEVEL_KINDS for c in classes) else WARN
    return result("errors", outcome, f"{total} row(s) became errors in 24 hours, mostly {top.label}.", evidence,
                  remedy=top.hint, link=link, link_label="errors in the sync log")
