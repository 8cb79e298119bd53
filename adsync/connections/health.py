"""A connection's health: recording failures as data, and the card's state computed from it.

Every failure adsync meets while working for a connection is recorded here, as fields: what it
was doing (`last_error_operation`), Microsoft's classification and code (`last_error_kind`,
`last_error_code`), Microsoft's words verbatim (`last_error`) and when (`last_error_at`).
`card_state` turns those fields into the one state every page shows (the card, the list, the
dashboard, the digest, the support details): a label, a colour, one sentence why, Microsoft's
words, a hint and the one fix (`fix_link` turns it into a link); nothing ever parses the message
text. The states, in the order they are decided, are listed in docs/connections.md ("The card's
states").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import OuterRef, Subquery
from django.dispatch import Signal
from django.urls import reverse
from django.utils import timezone

from adsync.links import absolute, card_url, sync_log_url
from adsync.microsoft.errors import Kind, MicrosoftAdsError, remedy_hint
from adsync.models import Connection, DiagnosisSummary, Push

STALE_AFTER = timedelta(hours=24)
# OAuth errors that mean the app's own credentials are wrong: retrying cannot fix them.
APP_REJECTED_CODES = {"invalid_client", "unauthorized_client"}
# Account-kind codes a Reconnect fixes (another user, or the account picked again); the others
# (5613 not enabled, 116 headers, developer token) need someone to look at Microsoft's words.
RECONNECT_ACCOUNT_CODES = {"108", "120", "1001", "1102", "1490", "2035"}

# Sent (by mark_token_expired) when a card flips to Token expired; adsync/notify/alerts.py listens.
token_expired = Signal()

# The one fix a state asks for; `fix_link` gives its label and URL, the same on every page.
CONNECT, RECONNECT, REFRESH_GOALS, RESYNC, SYNC_LOG, SETTINGS = (
    "connect", "reconnect", "refresh_goals", "resync", "sync_log", "settings")
DIAGNOSE = "diagnose"  # follow the failing check's remedy, then "Check this connection" (docs/diagnosis.md)
FIX_LABELS = {CONNECT: "Connect", RECONNECT: "Reconnect", REFRESH_GOALS: "Refresh goals", RESYNC: "Resync now",
              SYNC_LOG: "Open the sync log", SETTINGS: "Check the app's client ID and secret",
              DIAGNOSE: "Open the card's checklist"}
CHECK_FAILING = "check_failing"  # the state of a card whose latest diagnosis has a failing check

GREEN, AMBER, RED, GREY = "#1a7f37", "#9a6700", "#cf222e", "#6e7781"


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
    log_status: str = ""  # with fix SYNC_LOG: the sync log filtered to this status

    @property
    def needs_attention(self) -> bool:
        return self.key != ACTIVE.key

    @property
    def fix_label(self) -> str:
        return FIX_LABELS.get(self.fix, "")


ACTIVE = CardState("active", "Active", GREEN, "Connected; uploads and the insights sync are working.")


def fix_link(state: CardState, connection_id: int, *, absolute_url: bool = False) -> tuple[str, str] | None:
    """(label, URL) of the state's one fix. Every fix is a link: Reconnect and Connect start the sign-in,
    Refresh goals and Resync now open a confirmation page whose button runs them."""
    if not state.fix:
        return None
    if state.fix == SYNC_LOG:
        url = sync_log_url(connection_id=connection_id, status=state.log_status or None)
    elif state.fix in (SETTINGS, DIAGNOSE):
        url = card_url(connection_id)
    else:
        url = reverse(f"admin:adsync_connection_{state.fix}", args=[connection_id])
    return state.fix_label, absolute(url) if absolute_url else url


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
    """Active, but the insights sync has not succeeded in the last 24 hours (counted from the Connect when it
    never ran: a new connection's first sync is queued at once, so it is not stale meanwhile)."""
    if connection.status != Connection.ACTIVE:
        return False
    last = connection.last_insights_sync_at or connection.connected_at or connection.created_at
    return last is None or (now or timezone.now()) - last > STALE_AFTER


_UNKNOWN = object()


def card_state(connection: Connection, newest_sent_at=_UNKNOWN, now: datetime | None = None) -> CardState:
    """The card's state, from fields. `newest_sent_at`: when the newest sent row was sent (lists
    annotate it with `newest_sent_at_subquery`; otherwise it is read when needed, one query).

    In order: Disconnected, Token expired, a failing upload / sign-in / goal refresh / insights sync
    (each stops counting once the same work succeeded after it), goals never fetched, stale, Active.
    """
    now = now or timezone.now()
    if connection.status == Connection.DISCONNECTED:
        return CardState("disconnected", "Disconnected", GREY,
                         "Not connected: nothing is sent for this site until a Microsoft Ads account is connected.",
                         "", "Click Connect and sign in to Microsoft Ads.", CONNECT)
    if connection.status == Connection.TOKEN_EXPIRED:
        return CardState("token_expired", "Token expired", RED,
                         "Microsoft no longer accepts this connection's sign-in; conversions wait, queued, until "
                         "someone reconnects.", connection.last_error, remedy_hint(None, Kind.RECONNECT), RECONNECT)
    problem = _failure_state(connection, newest_sent_at, now) or failing_check(connection)
    if problem is not None:
        return problem
    if connection.goals_refreshed_at is None:
        return CardState("goals_unknown", "Goal list not fetched yet", AMBER,
                         "adsync has not fetched this account's conversion goals, so it cannot check the Goal Names "
                         "before sending.", "", "Click Refresh goals; it takes a few seconds.", REFRESH_GOALS)
    if is_stale(connection, now):
        last = connection.last_insights_sync_at
        when = f"{last:%Y-%m-%d %H:%M} UTC" if last else "never"
        return CardState("stale", "Active but stale", AMBER,
                         f"No successful insights sync in the last 24 hours (last: {when}).",
                         connection.last_error if connection.last_error_operation == Connection.INSIGHTS else "",
                         "Click Resync now; if it stays stale, read the last error below.", RESYNC)
    return ACTIVE


def _failure_state(connection: Connection, newest_sent_at, now: datetime) -> CardState | None:
    """The state of the last recorded failure, unless the same work has succeeded since."""
    failed_at, kind, operation = connection.last_error_at, connection.last_error_kind, connection.last_error_operation
    if not kind or failed_at is None or _recovered(connection, operation, failed_at, newest_sent_at):
        return None
    code = connection.last_error_code
    what = _WHAT.get(operation, "a call")
    coded = f" ({code})" if code else ""
    message, hint = connection.last_error, remedy_hint(int(code) if code.isdigit() else None, kind)
    if kind == Kind.NO_ACCESS:
        reason = ("The signed-in Microsoft user is only a Viewer on this account: Microsoft refuses its uploads "
                  "(106)." if operation == Connection.CONNECT else
                  f"The connected Microsoft user cannot reach this account: Microsoft refused {what}{coded}.")
        return CardState("failing", "Failing: no access to this account", RED, reason, message, hint, RECONNECT)
    if kind in (Kind.RECONNECT, Kind.AUTH):
        return CardState("failing", "Failing: sign-in refused", RED,
                         f"Microsoft refused this connection's sign-in for {what}{coded}.", message,
                         remedy_hint(None, Kind.RECONNECT), RECONNECT)
    if kind == Kind.ACCOUNT:
        fix = RECONNECT if code in RECONNECT_ACCOUNT_CODES else SYNC_LOG
        return CardState("failing", "Failing: account or developer token refused", RED,
                         f"Microsoft refused {what} for this account or developer token{coded}; conversions wait, "
                         f"queued.", message, hint, fix, Push.QUEUED)
    if operation == Connection.TOKEN_REFRESH:
        if code in APP_REJECTED_CODES:
            return CardState("failing", "Failing: Microsoft rejected the app's client ID or secret", RED,
                             "The token refresh is refused because of the app's credentials.", message,
                             "Check MICROSOFT_ADS_CLIENT_ID / MICROSOFT_ADS_CLIENT_SECRET, or the client ID and secret "
                             "on this connection (a new secret in Azure must be entered here), then click Reconnect.",
                             SETTINGS)
        return CardState("retrying", "Token refresh failing (adsync retries)", AMBER,
                         f"The last token refresh failed{coded}; adsync tries again, and conversions wait meanwhile.",
                         message, remedy_hint(None, Kind.TRANSIENT), SYNC_LOG, Push.QUEUED)
    if operation == Connection.GOAL_REFRESH:
        return CardState("goals_failing", "Goal list refresh failing", AMBER,
                         f"The last goal list refresh failed{coded}, so the Goal Names are checked against an old "
                         f"list.", message, hint, REFRESH_GOALS)
    if operation == Connection.INSIGHTS:
        if kind in (Kind.TRANSIENT, Kind.THROTTLED):
            return CardState("insights_failing", "Insights sync failing (adsync retries)", AMBER,
                             f"The last insights sync failed{coded}; adsync retries within minutes and keeps the "
                             f"previous numbers.", message, hint, RESYNC)
        return CardState("insights_failing", "Insights sync failing", AMBER,
                         f"The last insights sync failed{coded}; the previous numbers are kept.", message, hint,
                         RESYNC)
    return _upload_state(connection, kind, coded, message, hint, now)


def _upload_state(connection: Connection, kind: str, coded: str, message: str, hint: str,
                  now: datetime) -> CardState | None:
    if kind == Kind.THROTTLED:
        until = connection.throttled_until
        if until is None or until <= now:
            return None
        return CardState("retrying", "Throttled by Microsoft", AMBER,
                         f"Microsoft asked adsync to slow down; uploads resume at {until:%H:%M:%S} UTC.", message, hint,
                         SYNC_LOG, Push.QUEUED)
    if kind == Kind.TRANSIENT:
        return CardState("retrying", "Uploads retrying", AMBER,
                         f"The last upload failed{coded}; adsync retries with backoff.", message, hint, SYNC_LOG,
                         Push.QUEUED)
    if kind == Kind.ROW:
        return CardState("rows_failing", "Uploads partly refused", AMBER,
                         f"Microsoft refused rows of the last upload{coded}.", message, hint, SYNC_LOG, Push.ERROR)
    if kind == Kind.REVIEW:
        return CardState("failing", "Failing: unrecognised error", RED,
                         f"Microsoft refused the last upload with an error adsync does not recognise{coded}.", message,
                         hint, SYNC_LOG, Push.QUEUED)
    return None


_WHAT = {Connection.UPLOAD: "the upload", Connection.CONNECT: "uploads", Connection.TOKEN_REFRESH: "the token refresh",
         Connection.GOAL_REFRESH: "the goal list refresh", Connection.INSIGHTS: "the insights sync"}


def _recovered(connection: Connection, operation: str, failed_at: datetime, newest_sent_at) -> bool:
    """The same work succeeded after the failure: it no longer counts."""
    if operation in (Connection.UPLOAD, Connection.CONNECT):
        if connection.last_upload_ok_at is not None and connection.last_upload_ok_at >= failed_at:
            return True  # Microsoft took an upload call since (its rows may still have failed one by one)
        if newest_sent_at is _UNKNOWN:
            newest_sent_at = newest_sent(connection)
        return newest_sent_at is not None and newest_sent_at >= failed_at
    succeeded = {Connection.TOKEN_REFRESH: connection.refreshed_at, Connection.GOAL_REFRESH: connection.goals_refreshed_at,
                 Connection.INSIGHTS: connection.last_insights_sync_at}.get(operation)
    return succeeded is not None and succeeded >= failed_at


def failing_check(connection: Connection) -> CardState | None:
    """The latest diagnosis's first failing check (read from the connection's summary, no query), or None."""
    check = DiagnosisSummary.of(connection).failing
    if check is None:
        return None
    return CardState(CHECK_FAILING, f"Check {check.number} failing: {check.title}", RED, check.summary, "",
                     check.remedy, DIAGNOSE)


def newest_sent(connection: Connection) -> datetime | None:
    """When the newest sent row of the connection was sent (one seek on the sync log's filter index)."""
    return (Push.objects.filter(connection=connection, status=Push.SENT).order_by("-created_at")
            .values_list("sent_at", flat=True).first())


def newest_sent_at_subquery() -> Subquery:
    """`newest_sent` for a list of connections, as an annotation (one seek per row, no extra query)."""
    rows = Push.objects.filter(connection=OuterRef("pk"), status=Push.SENT).order_by("-created_at")
    return Subquery(rows.values("sent_at")[:1])


def card_states(connections) -> list[tuple[Connection, CardState]]:
    """Each connection of an annotated list (`newest_sent_at`) with its state."""
    return [(conn, card_state(conn, getattr(conn, "newest_sent_at", _UNKNOWN))) for conn in connections]


def last_failure(connection: Connection) -> str:
    """"Insights sync failed (2026-12-05 07:00 UTC): <Microsoft's words>" and our hint, or ""."""
    if not connection.last_error:
        return ""
    what = connection.get_last_error_operation_display() or "Last call"
    when = f" ({connection.last_error_at:%Y-%m-%d %H:%M} UTC)" if connection.last_error_at else ""
    code = connection.last_error_code
    hint = remedy_hint(int(code) if code.isdigit() else None, connection.last_error_kind or None)
    return f"{what} failed{when}: {connection.last_error}" + (f" — {hint}" if hint else "")


def record_viewer(connection: Connection) -> None:
    """The account picker saw that the signed-in user is a Viewer: say so before the first upload fails."""
    record_failure(connection, Connection.CONNECT, MicrosoftAdsError(
        "The signed-in Microsoft user has the Viewer role on this account; Microsoft answers its uploads with "
        "106 UserIsNotAuthorized.", kind=Kind.NO_ACCESS))


def _code(error: MicrosoftAdsError) -> str:
    if error.code is not None:
        return str(error.code)
    return error.error_code or ""
