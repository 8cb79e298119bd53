"""Checks 1-3, the account as Microsoft sees adsync: the token refresh and the signed-in user's role, the
developer token, auto-tagging. Check 1 leaves a fresh access token for the others; check 2's call also
brings back the auto-tagging setting check 3 judges.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from adsync.conf import conf
from adsync.connections import health, tokens
from adsync.diagnosis.context import Context, result
from adsync.diagnosis.help_pages import GUIDE_DEVELOPER_TOKEN, HELP_AUTO_TAGGING, HELP_OFFLINE_GOALS
from adsync.links import card_url, connection_page_url
from adsync.microsoft.campaign import CampaignClient
from adsync.microsoft.customer import CustomerClient
from adsync.microsoft.errors import Kind, MicrosoftAdsError
from adsync.models import CheckResult, Connection
from adsync.models.diagnosis import FAIL, PASS, SKIP, WARN

SANDBOX_DEVELOPER_TOKEN = "BBD37VB98"  # Microsoft's universal sandbox token (docs/microsoft-api.md#request-headers)


# --- 1. Tokens --------------------------------------------------------------------------------------

def check_tokens(ctx: Context) -> CheckResult:
    """The refresh works now, and the signed-in Microsoft user's role on the account allows uploads."""
    conn = ctx.connection
    reconnect = connection_page_url(conn.pk, "reconnect")
    if conn.status == Connection.DISCONNECTED or not conn.refresh_token:
        return result("tokens", FAIL, "Not connected: adsync holds no token for this account.",
                      remedy="Click Connect on the card and sign in with a user that has Standard access or more.",
                      link=card_url(conn.pk), link_label="the card")
    if conn.status == Connection.TOKEN_EXPIRED:
        return result("tokens", FAIL, "Token expired: Microsoft no longer accepts this connection's refresh token.",
                      [f"Microsoft said: {conn.last_error}"] if conn.last_error else [],
                      remedy="Click Reconnect and sign in with a user that has Standard access or more.",
                      link=reconnect, link_label="Reconnect")
    try:
        ctx.access_token = tokens.refresh(conn, stale_access_token=conn.access_token)
    except MicrosoftAdsError as err:
        return _refresh_failed(conn, err, reconnect)
    conn.refresh_from_db(fields=["token_expires_at", "refreshed_at", "status"])
    evidence = [f"Refresh token accepted now; the new access token is valid until {conn.token_expires_at:%H:%M} UTC "
                f"and the rotated refresh token is stored (encrypted)."]
    try:
        accounts = CustomerClient(access_token=ctx.access_token).reachable_accounts()
    except MicrosoftAdsError as err:
        evidence.append(f"Customer Management (GetUser, SearchAccounts) answered: {err.describe()}")
        see = " (see check 2)" if err.kind == Kind.AUTH else ""
        return result("tokens", WARN, f"The refresh works, but the user's role could not be read{see}.", evidence,
                      remedy="Run the check again in a few minutes; if it persists, Reconnect.",
                      link=reconnect, link_label="Reconnect")
    account = next((a for a in accounts if a.id == conn.account_id), None)
    if account is None:
        evidence.append(f"The signed-in Microsoft user reaches {len(accounts)} account(s), not Account ID "
                        f"{conn.account_id}.")
        return result("tokens", FAIL, f"The signed-in Microsoft user can no longer reach Account ID {conn.account_id}.",
                      evidence, remedy="Reconnect with a user who has Standard access or more on this account, "
                                       "and pick the same account.", link=reconnect, link_label="Reconnect")
    ctx.account = account
    role = account.role_names or "no role listed"
    evidence.append(f"The signed-in Microsoft user's role on Account ID {account.id} ({account.name}): {role}.")
    if account.viewer_only:
        return result("tokens", FAIL, "The signed-in Microsoft user is a Viewer on this account: uploads fail with 106.",
                      evidence, remedy="Reconnect with a user who has Standard access or more on this account.",
                      link=reconnect, link_label="Reconnect")
    if not account.role_ids:
        return result("tokens", WARN, "The refresh works, but Microsoft listed no role for this account.", evidence,
                      remedy="Make sure the user has Standard access or more on the account, then Reconnect.",
                      link=reconnect, link_label="Reconnect")
    return result("tokens", PASS, f"The refresh works and the signed-in user ({role}) may upload.", evidence)


def _refresh_failed(conn: Connection, err: MicrosoftAdsError, reconnect: str) -> CheckResult:
    evidence = [f"Microsoft said: {err.describe()}"]
    if err.kind == Kind.RECONNECT:
        return result("tokens", FAIL, "Microsoft refused the refresh token just now: the card is Token expired.",
                      evidence, remedy="Click Reconnect and sign in with a user that has Standard access or more.",
                      link=reconnect, link_label="Reconnect")
    if err.error_code in health.APP_REJECTED_CODES:
        return result("tokens", FAIL, "Microsoft rejected the app's client ID or secret during the refresh.", evidence,
                      remedy="Enter the Azure app's current client ID and secret (on the card or in "
                             "MICROSOFT_ADS_CLIENT_ID / _SECRET), then Reconnect.", link=card_url(conn.pk),
                      link_label="the card")
    return result("tokens", WARN, "The token refresh failed just now (Microsoft unreachable or busy).", evidence,
                  remedy="Nothing to do if it passes on the next run; adsync retries refreshes on its own.")


# --- 2. Developer token -----------------------------------------------------------------------------

def check_developer_token(ctx: Context) -> CheckResult:
    """Campaign Management, called with a token Microsoft just issued, accepts adsync's developer token."""
    env = conf.environment
    if env == "production" and conf.developer_token == SANDBOX_DEVELOPER_TOKEN:
        return result("developer_token", FAIL, "MICROSOFT_ADS_DEVELOPER_TOKEN is the sandbox's universal token, "
                      "but adsync talks to production.", remedy="Set MICROSOFT_ADS_DEVELOPER_TOKEN to your production "
                      "developer token (Microsoft Advertising Developer Portal → Account).", link=GUIDE_DEVELOPER_TOKEN,
                      link_label="Get a developer token")
    if not ctx.access_token:
        return result("developer_token", SKIP, "Not checked: it needs the working token of check 1.")
    conn = ctx.connection
    client = CampaignClient(access_token=ctx.access_token, customer_id=conn.customer_id, account_id=conn.account_id)
    try:
        ctx.auto_tagging = client.msclkid_auto_tagging_enabled()
    except MicrosoftAdsError as err:
        return _api_refused(conn, err, env)
    ctx.api_ok = True
    host = urlsplit(conf.campaign_api_url).netloc
    evidence = [f"Campaign Management ({host}, {env} environment) accepted the developer token with a fresh "
                f"access token for Account ID {conn.account_id} (GetAccountProperties)."]
    status = ctx.account.status if ctx.account else ""
    if status and status != "Active":
        evidence.append(f"The account's status is {status}.")
        return result("developer_token", WARN, f"The developer token is accepted, but the account is {status}.",
                      evidence, remedy="Reactivate the account in Microsoft Ads (Accounts summary); a paused or "
                      "suspended account may refuse uploads.", link=HELP_OFFLINE_GOALS,
                      link_label="Offline conversions help")
    return result("developer_token", PASS, f"Accepted by the {env} environment for this account.", evidence)


def _api_refused(conn: Connection, err: MicrosoftAdsError, env: str) -> CheckResult:
    evidence = [f"GetAccountProperties answered: {err.describe()}"]
    if err.kind == Kind.AUTH:
        # The access token is minutes old, so a 105 here is the developer token (docs/microsoft-api.md#error-codes).
        return result("developer_token", FAIL, f"Microsoft refused the credentials with a fresh access token: the "
                      f"developer token is not accepted by the {env} environment.", evidence,
                      remedy="Set MICROSOFT_ADS_DEVELOPER_TOKEN to an approved developer token of this environment "
                             "(production token for production, BBD37VB98 for sandbox).", link=GUIDE_DEVELOPER_TOKEN,
                      link_label="Get a developer token")
    if err.kind in (Kind.NO_ACCESS, Kind.ACCOUNT, Kind.RECONNECT):
        return result("developer_token", FAIL, "Campaign Management refused this account.", evidence,
                      remedy=err.hint, link=connection_page_url(conn.pk, "reconnect"), link_label="Reconnect")
    return result("developer_token", WARN, "Campaign Management could not be asked just now.", evidence,
                  remedy="Run the check again later; this is usually temporary.")


# --- 3. Auto-tagging --------------------------------------------------------------------------------

def check_auto_tagging(ctx: Context) -> CheckResult:
    """MSCLKIDAutoTaggingEnabled, as check 2's GetAccountProperties returned it."""
    if not ctx.api_ok:
        return result("auto_tagging", SKIP, "Not checked: it needs Campaign Management (check 2).")
    evidence = [f"GetAccountProperties: MSCLKIDAutoTaggingEnabled = {_property(ctx.auto_tagging)}."]
    if ctx.auto_tagging is True:
        return result("auto_tagging", PASS, "On: Microsoft appends msclkid to every landing URL.", evidence)
    remedy = ("Turn on auto-tagging of the Microsoft Click ID in Microsoft Ads (Settings → Account level options → "
              "Auto-tagging), then allow 1–2 weeks for tagged visits to build up.")
    if ctx.auto_tagging is False:
        return result("auto_tagging", FAIL, "Off: landing URLs carry no msclkid, so new visits cannot be matched.",
                      evidence, remedy=remedy, link=HELP_AUTO_TAGGING, link_label="Microsoft: auto-tagging")
    return result("auto_tagging", WARN, "Microsoft's answer did not say whether auto-tagging is on.", evidence,
                  remedy=remedy, link=HELP_AUTO_TAGGING, link_label="Microsoft: auto-tagging")


def _property(value: bool | None) -> str:
    return {True: "true", False: "false"}.get(value, "not returned")
