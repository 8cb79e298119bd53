"""Immediate alert emails, at most one per connection per hour.

Two triggers: a card flipping to Token expired (the `token_expired` signal of
adsync/connections/health.py, connected below) and a single flush producing more errors than
ADSYNC_ALERT_ERROR_THRESHOLD (the flush job, adsync/jobs.py). Both happen on the sync path, so
an alert is sent after the surrounding transaction commits and can never raise into it: a
failed email is logged, the flush goes on.
The debounce is a conditional UPDATE on Connection.last_alert_at, so two workers racing on
the same connection send one email.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.dispatch import receiver
from django.utils import timezone

from adsync.conf import conf
from adsync.connections import health
from adsync.links import card_url, sync_log_url
from adsync.models import Connection, Push, StaffNotificationPreference
from adsync.notify import emails
from adsync.notify.digest import error_classes, health_of

log = logging.getLogger(__name__)

ALERT_INTERVAL = timedelta(hours=1)
TOKEN_EXPIRED = "token_expired"
FLUSH_ERRORS = "flush_errors"


@receiver(health.token_expired, dispatch_uid="adsync.notify.alerts.token_expired")
def token_expired(sender, connection: Connection, **kwargs) -> None:
    """The card just flipped to Token expired: tell the staff who opted in to alerts."""
    _after_commit(connection.pk, TOKEN_EXPIRED, 0)


def flush_errors(connection_id: int, errors: int) -> None:
    """One flush produced `errors` error rows: alert when that is over the threshold."""
    if errors > conf.alert_error_threshold:
        _after_commit(connection_id, FLUSH_ERRORS, errors)


def _after_commit(connection_id: int, reason: str, errors: int) -> None:
    try:
        transaction.on_commit(lambda: _send_safely(connection_id, reason, errors))
    except Exception:  # an alert must never break the sync path that triggered it
        log.exception("could not schedule the %s alert for connection %s", reason, connection_id)


def _send_safely(connection_id: int, reason: str, errors: int) -> None:
    try:
        send_alert(connection_id, reason, errors)
    except Exception:
        log.exception("the %s alert email for connection %s failed", reason, connection_id)


def claim_alert_slot(connection_id: int) -> bool:
    """True for the one caller allowed to alert about this connection in the current hour."""
    now = timezone.now()
    return bool(Connection.objects.filter(pk=connection_id).filter(
        Q(last_alert_at__isnull=True) | Q(last_alert_at__lte=now - ALERT_INTERVAL)
    ).update(last_alert_at=now))


def send_alert(connection_id: int, reason: str, errors: int = 0) -> bool:
    """Email the alert unless no one opted in or one went out for this connection within the hour."""
    recipients = StaffNotificationPreference.addresses("alerts")
    if not recipients or not claim_alert_slot(connection_id):
        return False
    connection = Connection.objects.select_related("site").get(pk=connection_id)
    emails.send("sync_alert", recipients, alert_context(connection, reason, errors))
    log.info("%s alert sent for connection %s to %d recipient(s)", reason, connection_id, len(recipients))
    return True


def alert_context(connection: Connection, reason: str, errors: int) -> dict:
    now = timezone.now()
    since = now - ALERT_INTERVAL
    health, health_hint = health_of(connection)
    return {
        "connection": connection,
        "reason": reason,
        "token_expired": reason == TOKEN_EXPIRED,
        "errors": errors,
        "threshold": conf.alert_error_threshold,
        "health": health,
        "health_hint": health_hint,
        "error_classes": error_classes(since, now, [connection.pk]).get(connection.pk, []),
        "since": since,
        "card_url": card_url(connection.pk, absolute_url=True),
        "errors_url": sync_log_url(connection_id=connection.pk, status=Push.ERROR, absolute_url=True),
    }
