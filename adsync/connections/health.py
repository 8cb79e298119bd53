"""A connection's health: recording failures as data, and the card's state computed from it.

Every failure adsync meets while working for a connection is recorded here, as fields: what it
was doing (`last_error_operation`), Microsoft's classification and code (`last_error_kind`,
`last_error_code`), Microsoft's words verbatim (`last_error`) and when (`last_error_at`).
`card_state` turns those fields into the one state every page shows (the card, the list, the
dashboard, the digest, the support details); nothing ever parses the message text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.dispatch import Signal
from django.utils import timezone

from adsync.microsoft.errors import Kind, MicrosoftAdsError, remedy_hint
from adsync.models import Connection, DiagnosisSummary, Push

STALE_AFTER = timedelta(hours=24)
# OAuth errors that mean the app's own credentials are wrong: retrying cannot fix them.
APP_REJECTED_CODES = {"invalid_client", "unauthorized_client"}

# Sent (by mark_token_expired) when a card flips to Token expired; adsync/notify/alerts.py listens.
token_expired = Signal()

# The one fix a state asks for (adsync/admin turns it into a button or link).
CONNECT, RECONNECT, RESYNC, SETTINGS = "connect", "reconnect", "resync", "settings"
DIAGNOSE = "diagnose"  # follow the failing check's remedy, then "Check this connection" (docs/diagnosis.md)
CHECK_FAILING = "check_failing"  # the state of a card whose latest diagnosis has a failing check


@dataclass(frozen=True)
class CardState:
    """What the card says: a state, its colour, one sentence why, Microsoft's words and the fix."""

    key: str
    label: str
    colour: str
    reason: str = ""
    message: str = ""  # Microsoft's text, verbatim
    hint: str = ""
    fix: str = ""

    @property
    def needs_attention(self) -> bool:
        return self.key != ACTIVE.key


ACTIVE = CardState("active", "Active", "#1a7f37")


def record_failure(connection: Connection, operation: str, error: MicrosoftAdsError) -> None:
    """Store a failure of `operation` (Connection.UPLOAD, TOKEN_REFRESH, ...) on the connection."""
    now = timezone.now()
    fields = {"last_error": error.describe(), "last_error_at": now, "last_error_operation": operation,
              "last_error_kind": str(error.kind), "last_error_code": _code(error)}
    Connection.objects.filter(pk=connection.pk).update(**fields)
    for name, value in fields.items():
        setattr(connection, name, value)


def mark_token_expired(connection: Connection, operation: str, error: MicrosoftAdsError) -> bool:
    """Card → Token expired. Returns True for the one call that flipped it, which sends `token_expired`."""
    flipped = bool(Connection.objects.filter(pk=connection.pk).exclude(status=Connection.TOKEN_EXPIRED).update(
        status=Connection.TOKEN_EXPIRED))
    connection.status = Connection.TOKEN_EXPIRED
    record_failure(connection, operation, error)
    if flipped:
        token_expired.send(sender=Connection, connection=connection)
    return flipped


def clear(connection: Connection) -> dict:
    """The fields that forget the last failure (a fresh Connect): to be saved by the caller."""
    return {"last_error": "", "last_error_at": None, "last_error_operation": "", "last_error_kind": "",
            "last_error_code": ""}


def is_stale(connection: Connection, now: datetime | None = None) -> bool:
    """Active, but the insights sync has not succeeded in the last 24 hours."""
    if connection.status != Connection.ACTIVE:
        return False
    last = connection.last_insights_sync_at
    return last is None or (now or timezone.now()) - last > STALE_AFTER


_UNKNOWN = object()


def card_state(connection: Connection, newest_sent_at=_UNKNOWN) -> CardState:
    """The card's state, from fields. `newest_sent_at`: when the newest sent row was sent (a list
    annotates it; otherwise it is read when needed, one query).

    A 106 is its own problem, never "Token expired"; it stops counting once an upload succeeded
    after it. A refresh failure stops counting once a refresh succeeded after it.
    """
    if connection.status == Connection.DISCONNECTED:
        return CardState("disconnected", "Disconnected", "#6e7781", "Not connected.", "",
                         "Click Connect and sign in to Microsoft Ads.", CONNECT)
    if connection.status == Connection.TOKEN_EXPIRED:
        return CardState("token_expired", "Token expired", "#b35900",
                         "Microsoft no longer accepts this connection's refresh token.", connection.last_error,
                         remedy_hint(None, Kind.RECONNECT), RECONNECT)
    problem = _active_problem(connection, newest_sent_at) or failing_check(connection)
    if problem is not None:
        return problem
    if is_stale(connection):
        last = connection.last_insights_sync_at
        when = f"{last:%Y-%m-%d %H:%M} UTC" if last else "never"
        return CardState("stale", "Active but stale", "#9a6700",
                         f"No successful insights sync in the last 24 hours (last: {when}).",
                         connection.last_error if connection.last_error_operation == Connection.INSIGHTS else "",
                         "Click Resync now; if it stays stale, read the last error below.", RESYNC)
    return ACTIVE


def _active_problem(connection: Connection, newest_sent_at) -> CardState | None:
    failed_at = connection.last_error_at
    if not connection.last_error_kind or failed_at is None:
        return None
    if connection.last_error_kind == Kind.NO_ACCESS and newest_sent_at is _UNKNOWN:
        newest_sent_at = newest_sent(connection)
    if connection.last_error_kind == Kind.NO_ACCESS and (newest_sent_at is None or newest_sent_at < failed_at):
        return CardState("failing", "No access to this account (106)", "#cf222e",
                         "The connected Microsoft user cannot upload to this account.", connection.last_error,
                         remedy_hint(106), RECONNECT)
    if connection.last_error_operation != Connection.TOKEN_REFRESH:
        return None
    if connection.refreshed_at is not None and connection.refreshed_at >= failed_at:
        return None
    if connection.last_error_code in APP_REJECTED_CODES:
        return CardState("failing", "Microsoft rejected the app's client ID or secret", "#cf222e",
                         "The token refresh is refused because of the app's credentials.", connection.last_error,
                         "Check MICROSOFT_ADS_CLIENT_ID / MICROSOFT_ADS_CLIENT_SECRET, or the client ID and secret on "
                         "this connection (a new secret in Azure must be entered here), then click Reconnect.",
                         SETTINGS)
    return CardState("failing", "Token refresh failing (adsync retries)", "#9a6700",
                     "The last token refresh failed; adsync tries again.", connection.last_error,
                     remedy_hint(None, Kind.TRANSIENT))


def failing_check(connection: Connection) -> CardState | None:
    """The latest diagnosis's first failing check (read from the connection's summary, no query), or None."""
    check = DiagnosisSummary.of(connection).failing
    if check is None:
        return None
    return CardState(CHECK_FAILING, f"Check {check.number} failing: {check.title}", "#cf222e", check.summary, "",
                     check.remedy, DIAGNOSE)


def newest_sent(connection: Connection) -> datetime | None:
    """When the newest sent row of the connection was sent (one seek on the sync log's filter index)."""
    return (Push.objects.filter(connection=connection, status=Push.SENT).order_by("-created_at")
            .values_list("sent_at", flat=True).first())


def last_failure(connection: Connection) -> str:
    """"Insights sync failed (2026-12-05 07:00 UTC): <Microsoft's words>" and our hint, or ""."""
    if not connection.last_error:
        return ""
    what = connection.get_last_error_operation_display() or "Last call"
    when = f" ({connection.last_error_at:%Y-%m-%d %H:%M} UTC)" if connection.last_error_at else ""
    code = connection.last_error_code
    hint = remedy_hint(int(code) if code.isdigit() else None, connection.last_error_kind or None)
    return f"{what} failed{when}: {connection.last_error}" + (f" — {hint}" if hint else "")


def _code(error: MicrosoftAdsError) -> str:
    if error.code is not None:
        return str(error.code)
    return error.error_code or ""
