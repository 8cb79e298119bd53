"""A connection's life: Connect / Reconnect (OAuth + account picker), Disconnect, keeping tokens alive.

Reference: docs/microsoft-api.md#oauth (PKCE, prompt, rotation, 90-day inactivity) and
#account-picker. The admin views in adsync/admin/connect.py and the `connect_microsoft_ads`
command are thin shells over these functions; docs/connections.md is the operator's guide.

Tokens are only ever replaced or wiped under the refresh lease (tokens.lease), so a refresh in
flight cannot overwrite a fresh Connect or resurrect a Disconnect.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Exists, OuterRef, Q
from django.urls import reverse
from django.utils import timezone

from adsync.conf import conf
from adsync.connections import health, tokens
from adsync.microsoft import oauth
from adsync.microsoft.customer import AdAccount, CustomerClient
from adsync.microsoft.errors import Kind, MicrosoftAdsError
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
    return conf.public_url + reverse("adsync:oauth-callback")


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
    """Store the picked account and the new tokens, and mark Active.

    A switch to another account forgets what belonged to the old one (its goals and insights). A
    Viewer is recorded as a failing card at once, before its first upload fails with 106. The caller
    then queues jobs.connection_ready (held pushes released, goals fetched, insights synced).
    """
    if connection.account_id and connection.account_id != account.id:
        forget_account_data(connection)
    with tokens.lease(connection):
        connection.customer_id, connection.account_id = account.customer_id, account.id
        connection.account_name, connection.account_number = account.name[:200], account.number[:20]
        connection.status = Connection.ACTIVE
        connection.connected_at = timezone.now()
        for name, value in health.clear(connection).items():
            setattr(connection, name, value)
        connection.save(update_fields=["customer_id", "account_id", "account_name", "account_number", "status",
                                       "connected_at", *health.clear(connection)])
        tokens.save_tokens(connection, token_set)
    if account.viewer_only:
        health.record_viewer(connection)


def forget_account_data(connection: Connection) -> None:
    """An account switch: the old account's goals would make the Goal Name check reject good names, and its
    campaign numbers would read as the new account's. Both go; the new account's are fetched at once."""
    connection.account_goals.all().delete()
    connection.insights.all().delete()
    Connection.objects.filter(pk=connection.pk).update(goals_refreshed_at=None, last_insights_sync_at=None)
    connection.goals_refreshed_at = connection.last_insights_sync_at = None


# --- Disconnect ---------------------------------------------------------------------------


def disconnect(connection: Connection) -> None:
    """Hard reset: wipe the tokens now and mark Disconnected (Microsoft documents no revocation
    endpoint, docs/microsoft-api.md#oauth). Mappings, the sync log and queued pushes are kept; the app's own client id
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
    connection.status = Connection.ACTIVE
    connection.connected_at = timezone.now()
    for name, value in health.clear(connection).items():
        setattr(connection, name, value)
    if connection.pk is None:
        connection.save()
        tokens.save_tokens(connection, token_set)
    else:
        with tokens.lease(connection):
            # Named fields only: a full save would also write back the lease and the flush's columns.
            connection.save(update_fields=_HEADLESS_FIELDS)
            tokens.save_tokens(connection, token_set)
    return connection


_HEADLESS_FIELDS = ["client_id", "client_secret", "customer_id", "account_id", "account_name", "status", "connected_at",
                    "last_error", "last_error_at", "last_error_operation", "last_error_kind", "last_error_code"]


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
