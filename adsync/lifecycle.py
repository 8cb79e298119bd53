"""A connection's life: Connect / Reconnect (OAuth + account picker), Disconnect, keeping tokens alive.

Reference: ../shared/docs/microsoft-ads-api.md §2 (OAuth: PKCE, prompt, rotation, 90-day
inactivity) and §3 (account picker). The admin views in adsync/connect_views.py and the
`connect_microsoft_ads` command are thin shells over these functions; docs/connections.md is
the operator's guide.

Tokens are only ever replaced or wiped under the refresh lease (tokens.lease), so a refresh in
flight cannot overwrite a fresh Connect or resurrect a Disconnect.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.urls import reverse
from django.utils import timezone

from adsync import tokens
from adsync.microsoft import oauth
from adsync.microsoft.customer import AdAccount, CustomerClient
from adsync.microsoft.errors import Kind, MicrosoftAdsError, remedy_hint
from adsync.models import Connection, Push, Site

log = logging.getLogger(__name__)

PROMPT_CONNECT = "select_account"
PROMPT_RECONNECT = "consent"
# Refresh tokens die after 90 days unused (AADSTS700082): a weekly refresh leaves a wide margin.
KEEPALIVE = timedelta(days=7)
# The schedule runs every ADSYNC_TOKEN_REFRESH_MINUTES (10): 15 minutes ahead covers one missed run.
REFRESH_AHEAD = timedelta(minutes=15)
CONSENT_PAGES = {
    "personal": "https://account.live.com/consent/Manage",
    "work": "https://myapps.microsoft.com",
}


def redirect_uri() -> str:
    """The OAuth redirect URI: ADSYNC_PUBLIC_URL + a fixed path; register it in the Azure app exactly."""
    return settings.ADSYNC_PUBLIC_URL + reverse("adsync:oauth-callback")


# --- Connect / Reconnect ------------------------------------------------------------------


@dataclass
class AuthorizationRequest:
    """What the callback needs to finish one consent round trip; kept in the staff member's session."""

    connection_id: int
    state: str
    code_verifier: str
    reconnect: bool

    def to_session(self) -> dict:
        return {"connection_id": self.connection_id, "state": self.state, "code_verifier": self.code_verifier,
                "reconnect": self.reconnect, "started_at": timezone.now().isoformat()}

    @classmethod
    def from_session(cls, data: dict) -> AuthorizationRequest:
        return cls(connection_id=int(data["connection_id"]), state=data["state"],
                   code_verifier=data["code_verifier"], reconnect=bool(data.get("reconnect")))


def start_authorization(connection: Connection, *, reconnect: bool) -> tuple[str, AuthorizationRequest]:
    """(authorize URL, request to remember). First Connect lets the user pick a Microsoft login;
    Reconnect forces the consent screen so a revoked or partial consent is granted again."""
    request = AuthorizationRequest(connection.pk, oauth.new_state(), oauth.new_code_verifier(), reconnect)
    client_id, _ = connection.oauth_client()
    prompt = PROMPT_RECONNECT if reconnect else PROMPT_CONNECT
    url = oauth.authorization_url(client_id, redirect_uri(), request.state, request.code_verifier, prompt)
    return url, request


@dataclass
class Authorization:
    """The outcome of a consent: tokens (not yet stored on the connection) and the accounts they reach."""

    tokens: oauth.TokenSet
    accounts: list[AdAccount] = field(default_factory=list)


def finish_authorization(connection: Connection, request: AuthorizationRequest, code: str) -> Authorization:
    """Exchange the code (with the PKCE verifier) and list the reachable ad accounts. HTTP; raises MicrosoftAdsError."""
    client_id, client_secret = connection.oauth_client()
    token_set = oauth.exchange_code(client_id, client_secret, code, redirect_uri(), request.code_verifier)
    if not token_set.refresh_token:
        raise MicrosoftAdsError(
            "Microsoft issued no refresh token: the offline_access permission was not granted.",
            kind=Kind.RECONNECT,
        )
    accounts = CustomerClient(access_token=token_set.access_token).reachable_accounts()
    return Authorization(token_set, accounts)


def choose_account(connection: Connection, account: AdAccount, token_set: oauth.TokenSet) -> None:
    """Store the picked account and the new tokens, mark Active, and let held pushes go out next flush."""
    if connection.account_id and connection.account_id != account.id:
        forget_goal_cache(connection)
    with tokens.lease(connection):
        connection.customer_id, connection.account_id = account.customer_id, account.id
        connection.account_name, connection.account_number = account.name[:200], account.number[:20]
        connection.status, connection.last_error, connection.last_error_at = Connection.ACTIVE, "", None
        connection.save(update_fields=["customer_id", "account_id", "account_name", "account_number", "status",
                                       "last_error", "last_error_at"])
        tokens.save_tokens(connection, token_set)
    release_held_pushes(connection)


def forget_goal_cache(connection: Connection) -> None:
    """Another account's goals would make the Goal Name check reject good names: start from "unknown"."""
    connection.account_goals.all().delete()
    Connection.objects.filter(pk=connection.pk).update(goals_refreshed_at=None)
    connection.goals_refreshed_at = None


def release_held_pushes(connection: Connection) -> int:
    """Queued rows held back while the connection could not send become due now.

    The flush parks rows for 15 minutes after a connection-level failure; after a Reconnect
    there is no reason to wait.
    """
    now = timezone.now()
    return Push.objects.filter(connection=connection, status=Push.QUEUED, next_attempt_at__gt=now).update(
        next_attempt_at=now
    )


# --- Disconnect ---------------------------------------------------------------------------


def disconnect(connection: Connection) -> None:
    """Hard reset: wipe the tokens now and mark Disconnected (Microsoft documents no revocation
    endpoint, §2). Mappings, the sync log and queued pushes are kept; the app's own client id
    and secret stay so Connect works again."""
    with tokens.lease(connection):
        Connection.objects.filter(pk=connection.pk).update(
            access_token="", refresh_token="", token_expires_at=None, status=Connection.DISCONNECTED,
        )
    connection.refresh_from_db()
    log.info("connection %s disconnected; stored tokens wiped", connection.pk)


# --- Headless set-up ----------------------------------------------------------------------


def connect_with_refresh_token(site: Site, *, customer_id: str, account_id: str, refresh_token: str,
                               account_name: str = "", client_id: str = "", client_secret: str = "") -> Connection:
    """Create or update the site's connection for `account_id` from an existing refresh token.

    The token is validated by refreshing it once before anything is saved; the rotated refresh
    token is the one stored. Raises MicrosoftAdsError (Microsoft's message verbatim) otherwise.
    """
    connection = Connection.objects.filter(site=site, platform=Connection.PLATFORM_MICROSOFT_ADS,
                                           account_id=account_id).first()
    connection = connection or Connection(site=site, platform=Connection.PLATFORM_MICROSOFT_ADS)
    if client_id:
        connection.client_id, connection.client_secret = client_id, client_secret
    app_id, app_secret = connection.oauth_client()
    token_set = oauth.refresh(app_id, app_secret, refresh_token)
    connection.customer_id, connection.account_id = customer_id, account_id
    connection.account_name = account_name or connection.account_name
    connection.status, connection.last_error, connection.last_error_at = Connection.ACTIVE, "", None
    if connection.pk is None:
        connection.save()
        tokens.save_tokens(connection, token_set)
    else:
        with tokens.lease(connection):
            # Named fields only: a full save would also write back the lease and the flush's columns.
            connection.save(update_fields=_HEADLESS_FIELDS)
            tokens.save_tokens(connection, token_set)
    release_held_pushes(connection)
    return connection


_HEADLESS_FIELDS = ["client_id", "client_secret", "customer_id", "account_id", "account_name", "status",
                    "last_error", "last_error_at"]


# --- Scheduled refresh --------------------------------------------------------------------


@dataclass
class RefreshReport:
    refreshed: list[int] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)
    retry_later: list[int] = field(default_factory=list)

    def line(self) -> str:
        return (f"{len(self.refreshed)} refreshed, {len(self.expired)} now Token expired, "
                f"{len(self.retry_later)} to retry later")


def connections_due_for_refresh(now: datetime | None = None):
    """Active connections whose token expires within 15 minutes while pushes wait, plus any
    connection not refreshed for a week even when idle (the 90-day inactivity rule)."""
    now = now or timezone.now()
    expiring = Q(token_expires_at__isnull=True) | Q(token_expires_at__lte=now + REFRESH_AHEAD)
    keepalive = Q(refreshed_at__isnull=True) | Q(refreshed_at__lte=now - KEEPALIVE)
    in_use = Exists(Push.objects.filter(connection=OuterRef("pk"), status=Push.QUEUED))
    return (
        Connection.objects.filter(status=Connection.ACTIVE).exclude(refresh_token="")
        .alias(in_use=in_use).filter((expiring & Q(in_use=True)) | keepalive)
    )


def refresh_due_tokens(now: datetime | None = None) -> RefreshReport:
    """Refresh every due connection once. invalid_grant → Token expired (by tokens.refresh);
    a network error or 5xx leaves the state unchanged for the next run."""
    report = RefreshReport()
    for connection in connections_due_for_refresh(now):
        try:
            # Passing the current token forces the refresh unless another worker just did it.
            tokens.refresh(connection, stale_access_token=connection.access_token)
        except MicrosoftAdsError as err:
            bucket = report.expired if err.kind == Kind.RECONNECT else report.retry_later
            bucket.append(connection.pk)
            continue
        report.refreshed.append(connection.pk)
    return report


def refresh_now(connection_id: int) -> str:
    """Task behind the card's "Refresh token now" action: one forced refresh, outcome on the card.

    Takes the id, not the instance: a pickled Connection would carry its decrypted tokens into the queue.
    """
    connection = Connection.objects.filter(pk=connection_id, status=Connection.ACTIVE).first()
    if connection is None:
        return f"connection {connection_id}: not active, not refreshed"
    try:
        tokens.refresh(connection, stale_access_token=connection.access_token)
    except MicrosoftAdsError as err:
        return f"connection {connection_id}: {err.describe()}"
    return f"connection {connection_id}: refreshed"


def enqueue_refresh_now(connection_ids: list[int]) -> None:
    """Queue refresh_now per connection once the current transaction commits (no HTTP in the request)."""
    from django_q.tasks import async_task

    for connection_id in connection_ids:
        transaction.on_commit(lambda pk=connection_id: async_task(
            "adsync.lifecycle.refresh_now", pk, group="adsync:refresh-now", task_name=f"adsync:refresh-now:{pk}"))


def scheduled_token_refresh() -> str:
    """Entry point for the django-q2 schedule `adsync:refresh-tokens`; a one-line summary for the task log."""
    return refresh_due_tokens().line()


# --- What the card should say -------------------------------------------------------------


@dataclass
class Problem:
    title: str
    message: str  # Microsoft's text, verbatim
    hint: str


# "106 UserIsNotAuthorized: …" from the flush, or "Goal refresh failed: 106 …" from the goal cache.
_NO_ACCESS = re.compile(r"(?:^|: )106\b")
_REFRESH_FAILING = "Token refresh failed"
_APP_REJECTED = re.compile(r"\b(invalid_client|unauthorized_client)\b")


def problem_for(connection: Connection, newest_sent_at: datetime | None = None) -> Problem | None:
    """The one thing staff must act on, if any. 106 (no access) is its own problem, never "Token expired"."""
    if connection.status == Connection.DISCONNECTED:
        return Problem("Not connected", "", "Click Connect and sign in to Microsoft Ads.")
    if connection.status == Connection.TOKEN_EXPIRED:
        return Problem("Token expired", connection.last_error, remedy_hint(None, Kind.RECONNECT))
    if not connection.last_error or not connection.last_error_at:
        return None
    if _NO_ACCESS.search(connection.last_error) and (newest_sent_at is None or newest_sent_at < connection.last_error_at):
        return Problem("No access to this account (106)", connection.last_error, remedy_hint(106))
    return _refresh_problem(connection)


def _refresh_problem(connection: Connection) -> Problem | None:
    """A refresh failure newer than the last good refresh. Wrong app credentials will not heal by retrying."""
    if not connection.last_error.startswith(_REFRESH_FAILING):
        return None
    if connection.refreshed_at is not None and connection.refreshed_at >= connection.last_error_at:
        return None
    if _APP_REJECTED.search(connection.last_error):
        return Problem("Microsoft rejected the app's client ID or secret", connection.last_error,
                       "Check MICROSOFT_ADS_CLIENT_ID / MICROSOFT_ADS_CLIENT_SECRET, or the client ID and secret on "
                       "this connection (a new secret in Azure must be entered here), then click Reconnect.")
    return Problem("Token refresh failing (adsync retries)", connection.last_error, remedy_hint(None, Kind.TRANSIENT))
