"""Admin pages for a connection's life: Connect / Reconnect, the OAuth callback, the account picker, Disconnect.

Staff only (the admin's own login and permission checks). The work is in adsync.connections.lifecycle.
The callback and the picker are the one place where a request talks to Microsoft: an
authorization code lives about five minutes and staff wait for the account list, so it cannot
be queued. Every failure there becomes an admin message and a redirect to the card, never a 500.

Session keys: `adsync_oauth` (state → verifier, per consent round trip) and `adsync_pick`
(connection id → the tokens waiting for an account choice, encrypted, and the account list).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html

from adsync import jobs
from adsync.connections import lifecycle
from adsync.links import card_url
from adsync.microsoft import oauth
from adsync.microsoft.customer import AdAccount
from adsync.microsoft.errors import Kind, MicrosoftAdsError
from adsync.models import Connection
from adsync.security import crypto
from adsync.security.roles import OPERATE_PERMISSION

OAUTH_KEY = "adsync_oauth"
PICK_KEY = "adsync_pick"
MAX_PENDING = 5  # concurrent consent round trips per staff session (several tabs)
PICK_TTL = timedelta(minutes=30)
# Operators (adsync/security/roles.py) and superusers; viewers see the card but cannot change its connection.
REQUIRED_PERMISSIONS = ("adsync.change_connection", OPERATE_PERMISSION)


def card_paths(model_admin, pages: list[tuple[str, object]]) -> list:
    """The card's extra admin URLs `<pk>/<route>/`, named `adsync_connection_<route>` (dashes as underscores),
    behind the admin's login, never_cache and CSRF; each view takes (request, model_admin, pk)."""
    def wrap(view):
        return model_admin.admin_site.admin_view(lambda request, pk: view(request, model_admin, pk))

    return [path(f"<int:pk>/{route}/", wrap(view), name=f"adsync_connection_{route.replace('-', '_')}")
            for route, view in pages]


def connection_urls(model_admin) -> list:
    """The connection's pages: Connect, Reconnect, the account picker, Disconnect and the one-click fixes."""
    return card_paths(model_admin, [("connect", connect), ("reconnect", reconnect), ("pick-account", pick_account),
                                    ("disconnect", disconnect), ("refresh-goals", refresh_goals), ("resync", resync)])


def operable_connection(request: HttpRequest, model_admin, pk: int) -> Connection:
    """The card's connection, for a staff member allowed to change it (operators, superusers); else 403."""
    connection = get_object_or_404(Connection.objects.select_related("site"), pk=pk)
    if not request.user.has_perms(REQUIRED_PERMISSIONS) or not model_admin.has_change_permission(request, connection):
        raise PermissionDenied
    return connection


# --- Connect / Reconnect ------------------------------------------------------------------


def connect(request: HttpRequest, model_admin, pk: int) -> HttpResponse:
    return _start(request, operable_connection(request, model_admin, pk), reconnect=False)


def reconnect(request: HttpRequest, model_admin, pk: int) -> HttpResponse:
    return _start(request, operable_connection(request, model_admin, pk), reconnect=True)


def _start(request: HttpRequest, connection: Connection, *, reconnect: bool) -> HttpResponse:
    """Remember state + PKCE verifier in the session and send the browser to Microsoft."""
    url, auth_request = lifecycle.start_authorization(connection, reconnect=reconnect)
    pending = dict(request.session.get(OAUTH_KEY, {}))
    pending[auth_request.state] = auth_request.to_session()
    request.session[OAUTH_KEY] = dict(list(pending.items())[-MAX_PENDING:])
    return HttpResponseRedirect(url)


@staff_member_required
def oauth_callback(request: HttpRequest) -> HttpResponse:
    """Microsoft's redirect after consent. Cancelled, mismatched, refused or unreachable: a message, not a 500."""
    auth_request = _pop_request(request, request.GET.get("state", ""))
    if auth_request is None:
        messages.error(request, "This sign-in does not match one started here (the OAuth state did not match), so "
                                "nothing was changed. Open the connection and click Connect again.")
        return redirect("admin:adsync_connection_changelist")
    connection = Connection.objects.filter(pk=auth_request.connection_id).first()
    if connection is None or not request.user.has_perms(REQUIRED_PERMISSIONS):
        raise PermissionDenied
    if request.GET.get("error"):
        _report_consent_error(request, request.GET["error"], request.GET.get("error_description", ""))
        return redirect(card_url(connection.pk))
    if not request.GET.get("code"):
        messages.error(request, "Microsoft returned no authorization code; nothing was changed. Click Connect again.")
        return redirect(card_url(connection.pk))
    return _finish(request, connection, auth_request, request.GET["code"])


def _finish(request: HttpRequest, connection: Connection, auth_request: lifecycle.AuthorizationRequest,
            code: str) -> HttpResponse:
    try:
        authorization = lifecycle.finish_authorization(connection, auth_request, code)
    except MicrosoftAdsError as err:
        messages.error(request, f"Could not finish connecting. Microsoft: {err.describe()} — {_connect_hint(err)}")
        return redirect(card_url(connection.pk))
    if not authorization.accounts:
        messages.error(request, "This Microsoft user cannot reach any Microsoft Ads account; nothing was changed. "
                                "Sign in with a user that has Standard access or more on the account.")
        return redirect(card_url(connection.pk))
    _store_pick(request, connection.pk, auth_request.reconnect, authorization)
    return redirect("admin:adsync_connection_pick_account", connection.pk)


def _report_consent_error(request: HttpRequest, error: str, description: str) -> None:
    """access_denied is a cancelled consent (docs/microsoft-api.md#oauth); anything else is Microsoft's refusal,
    shown verbatim."""
    verbatim = f"{error}: {description}" if description else error
    if error == "access_denied":
        messages.warning(request, f"Consent was cancelled at Microsoft, so nothing was changed. ({verbatim})")
        return
    messages.error(request, f"Microsoft refused the sign-in: {verbatim} — Nothing was changed. Check the Azure app "
                            f"registration: it must allow personal and work accounts and list the redirect URI "
                            f"{lifecycle.redirect_uri()} exactly.")


def _connect_hint(err: MicrosoftAdsError) -> str:
    if err.kind == Kind.TRANSIENT:
        return "Microsoft could not be reached or failed temporarily; nothing was changed. Try Connect again."
    if err.error_code == "invalid_client":
        return "The client ID or client secret is wrong, or the redirect URI is not registered in the Azure app."
    return "Nothing was changed. Click Connect (or Reconnect) to try again."


def _pop_request(request: HttpRequest, state: str) -> lifecycle.AuthorizationRequest | None:
    """One use per state: a replayed callback finds nothing."""
    pending = dict(request.session.get(OAUTH_KEY, {}))
    data = pending.pop(state, None) if state else None
    request.session[OAUTH_KEY] = pending
    return lifecycle.AuthorizationRequest.from_session(data) if data else None


# --- Account picker -----------------------------------------------------------------------


def _store_pick(request: HttpRequest, connection_id: int, reconnect: bool,
                authorization: lifecycle.Authorization) -> None:
    """The new tokens wait in the session, encrypted, until staff pick an account."""
    tokens = authorization.tokens
    picks = dict(request.session.get(PICK_KEY, {}))
    picks[str(connection_id)] = {
        "reconnect": reconnect,
        "created_at": timezone.now().isoformat(),
        "access_token": crypto.encrypt(tokens.access_token),
        "refresh_token": crypto.encrypt(tokens.refresh_token),
        "expires_at": tokens.expires_at.isoformat(),
        "accounts": [asdict(account) for account in authorization.accounts],
    }
    request.session[PICK_KEY] = picks


def _load_pick(request: HttpRequest, connection_id: int) -> dict | None:
    data = request.session.get(PICK_KEY, {}).get(str(connection_id))
    if not data or timezone.now() - datetime.fromisoformat(data["created_at"]) > PICK_TTL:
        return None
    return data


def _drop_pick(request: HttpRequest, connection_id: int) -> None:
    picks = dict(request.session.get(PICK_KEY, {}))
    picks.pop(str(connection_id), None)
    request.session[PICK_KEY] = picks


def _accounts(data: dict) -> list[AdAccount]:
    return [AdAccount(**{**raw, "role_ids": tuple(raw.get("role_ids") or ())}) for raw in data["accounts"]]


def _token_set(data: dict) -> oauth.TokenSet:
    return oauth.TokenSet(access_token=crypto.decrypt(data["access_token"]),
                          refresh_token=crypto.decrypt(data["refresh_token"]),
                          expires_at=datetime.fromisoformat(data["expires_at"]))


def pick_account(request: HttpRequest, model_admin, pk: int) -> HttpResponse:
    """List the reachable accounts; on POST store the chosen one (a switch needs explicit confirmation)."""
    connection = operable_connection(request, model_admin, pk)
    data = _load_pick(request, pk)
    if data is None:
        messages.warning(request, "No Microsoft sign-in is waiting for an account choice (or it is older than "
                                  "30 minutes). Click Connect to start again.")
        return redirect(card_url(pk))
    accounts = _accounts(data)
    if request.method != "POST":
        return _render_picker(request, model_admin, connection, accounts, data, selected=connection.account_id)
    chosen = next((a for a in accounts if a.id == request.POST.get("account_id")), None)
    error = _choice_error(connection, chosen, request.POST.get("confirm_switch") == "on")
    if error:
        selected = chosen.id if chosen else connection.account_id
        return _render_picker(request, model_admin, connection, accounts, data, selected=selected, error=error)
    return _choose(request, connection, chosen, _token_set(data))


def _choice_error(connection: Connection, chosen: AdAccount | None, confirmed: bool) -> str:
    if chosen is None:
        return "Pick one of the accounts listed."
    if connection.account_id and chosen.id != connection.account_id and not confirmed:
        return (f"{chosen.name} (Account ID {chosen.id}) is not the account connected so far "
                f"({connection.account_name or '-'}, Account ID {connection.account_id}). Tick the confirmation to "
                f"switch, or pick the same account.")
    return ""


def _choose(request: HttpRequest, connection: Connection, chosen: AdAccount, token_set: oauth.TokenSet) -> HttpResponse:
    try:
        lifecycle.choose_account(connection, chosen, token_set)
    except MicrosoftAdsError as err:
        messages.error(request, f"Could not save the connection: {err.describe()} Try again in a moment.")
        return redirect("admin:adsync_connection_pick_account", connection.pk)
    _drop_pick(request, connection.pk)
    jobs.enqueue(jobs.connection_ready, connection.pk)  # held rows released, goals fetched, insights synced
    messages.success(request, f"Connected: {chosen.name} (Account ID {chosen.id}). Queued conversions go out on the "
                              f"next flush.")
    if chosen.viewer_only:
        messages.warning(request, "This Microsoft user is a Viewer on the account: uploads will fail with 106 "
                                  "until a user with Standard access or more reconnects.")
    return redirect(card_url(connection.pk))


def _render_picker(request: HttpRequest, model_admin, connection: Connection, accounts: list[AdAccount], data: dict,
                   *, selected: str, error: str = "") -> HttpResponse:
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": Connection._meta,
        "title": "Pick the Microsoft Ads account",
        "connection": connection,
        "accounts": accounts,
        "selected": selected,
        "reconnect": data.get("reconnect"),
        "any_viewer": any(a.viewer_only for a in accounts),
        "error": error,
        "card_url": card_url(connection.pk),
    }
    return TemplateResponse(request, "adsync/pick_account.html", context, status=400 if error else 200)


# --- The card's one-click fixes: Refresh goals, Resync now ------------------------------------
# Links everywhere (the list, the dashboard, emails, support text), so GET asks and POST runs.


def refresh_goals(request: HttpRequest, model_admin, pk: int) -> HttpResponse:
    connection = operable_connection(request, model_admin, pk)
    if request.method != "POST":
        return _confirm(request, model_admin, connection, "Refresh goals",
                        "Fetch this account's conversion goals from Microsoft Ads now, so adsync checks the Goal Names "
                        "against them. The worker does it within seconds.")
    jobs.enqueue(jobs.refresh_goals_now, connection.pk, group="adsync:goals-now")
    messages.success(request, "Goal list refresh queued: the worker fetches it within seconds; reload the card to "
                              "see the goals.")
    return redirect(card_url(pk))


def resync(request: HttpRequest, model_admin, pk: int) -> HttpResponse:
    connection = operable_connection(request, model_admin, pk)
    if request.method != "POST":
        return _confirm(request, model_admin, connection, "Resync now",
                        "Fetch the last 14 days of campaign performance from Microsoft Ads now (the insights sync). "
                        "The worker runs it within a few minutes.")
    if not connection.is_active:
        messages.warning(request, f"Not queued: the connection is {connection.get_status_display()}. Reconnect it "
                                  f"first.")
        return redirect(card_url(pk))
    jobs.enqueue_insights([connection.pk])
    messages.success(request, "Insights resync queued: the worker runs it within a few minutes; the card's last sync "
                              "time changes when it succeeds.")
    return redirect(card_url(pk))


def _confirm(request: HttpRequest, model_admin, connection: Connection, title: str, explanation: str) -> HttpResponse:
    context = {**model_admin.admin_site.each_context(request), "opts": Connection._meta, "title": title,
               "connection": connection, "card_url": card_url(connection.pk), "explanation": explanation}
    return TemplateResponse(request, "adsync/confirm_card_action.html", context)


# --- Disconnect ---------------------------------------------------------------------------


def disconnect(request: HttpRequest, model_admin, pk: int) -> HttpResponse:
    """GET asks for confirmation; POST wipes the tokens at once and says where to remove the consent."""
    connection = operable_connection(request, model_admin, pk)
    if request.method != "POST":
        context = {**model_admin.admin_site.each_context(request), "opts": Connection._meta,
                   "title": "Disconnect Microsoft Ads", "connection": connection, "card_url": card_url(pk),
                   "queued": connection.pushes.filter(status="queued").count()}
        return TemplateResponse(request, "adsync/confirm_disconnect.html", context)
    try:
        lifecycle.disconnect(connection)
    except MicrosoftAdsError as err:
        messages.error(request, f"Could not disconnect now: {err.describe()} Try again in a moment.")
        return redirect(card_url(pk))
    messages.success(request, format_html(
        "Disconnected: adsync deleted its Microsoft tokens. Goal mappings, the sync log and queued conversions are "
        "kept. Microsoft has no revocation endpoint, so to remove adsync's access the Microsoft user removes the app "
        'at <a href="{0}">{0}</a> (personal Microsoft account) or <a href="{1}">{1}</a> (work or school account).',
        lifecycle.CONSENT_PAGES["personal"], lifecycle.CONSENT_PAGES["work"],
    ))
    return redirect(card_url(pk))
