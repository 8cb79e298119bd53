"""The emulator's identity platform: codes, access and refresh tokens, and their AADSTS errors (docs/microsoft-api.md#oauth).

Lifetimes follow Microsoft: codes ~5 minutes, access tokens 3,600 s, refresh tokens 90 days.
Refresh tokens rotate on every use. With the `strict_refresh_rotation` switch (default on) a
spent refresh token is refused, which real Entra ID does not do, to expose clients that lose
the rotated token. Client apps: settings.MICROSOFT_ADS_CLIENT_ID/SECRET, plus EmulatorApp rows.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import unquote_plus

from django.conf import settings
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from emulator import behaviour
from emulator.models import (
    EmulatorApp,
    EmulatorToken,
    EmulatorUser,
    adsync_callback_uri,
)

CODE_LIFETIME = timedelta(minutes=5)
ACCESS_LIFETIME = timedelta(seconds=3600)
REFRESH_LIFETIME = timedelta(days=90)
NON_API_SCOPES = {"openid", "profile", "email", "offline_access"}
_PREFIX = {EmulatorToken.ACCESS: "EwB.emulator.", EmulatorToken.REFRESH: "M.C5_BAY.0.U.emulator.",
           EmulatorToken.CODE: "M.C5_BAY.2.U.emulator-code."}


@dataclass(eq=False)
class TokenError(Exception):
    """An OAuth error answer: `error`, the AADSTS number and text, and the HTTP status."""

    error: str
    aadsts: int
    text: str
    status: int = 400

    def body(self) -> dict:
        now = timezone.now()
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        return {
            "error": self.error,
            "error_description": f"AADSTS{self.aadsts}: {self.text} Trace ID: {trace_id} "
                                 f"Correlation ID: {correlation_id} Timestamp: {now:%Y-%m-%d %H:%M:%SZ}",
            "error_codes": [self.aadsts],
            "timestamp": f"{now:%Y-%m-%d %H:%M:%SZ}",
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.aadsts}",
        }


def missing(parameter: str) -> TokenError:
    return TokenError("invalid_request", 900144,
                      f"The request body must contain the following parameter: '{parameter}'.")


def invalid_grant(aadsts: int, text: str) -> TokenError:
    return TokenError("invalid_grant", aadsts, text)


# --- Client apps ---------------------------------------------------------------------------

def client_secret_for(client_id: str) -> str | None:
    if client_id == settings.MICROSOFT_ADS_CLIENT_ID:
        return settings.MICROSOFT_ADS_CLIENT_SECRET
    app = EmulatorApp.objects.filter(client_id=client_id).first()
    return app.client_secret if app else None


def registered_redirect_uris(client_id: str) -> list[str]:
    """The app's registered redirect URIs: adsync's callback for the settings' app, the row's list otherwise.

    https://learn.microsoft.com/en-us/entra/identity-platform/reply-url
    """
    if client_id == settings.MICROSOFT_ADS_CLIENT_ID:
        return [adsync_callback_uri()]
    app = EmulatorApp.objects.filter(client_id=client_id).first()
    return app.registered_redirect_uris() if app else []


def redirect_uri_registered(client_id: str, redirect_uri: str) -> bool:
    """Exact, case-sensitive match. Apps that sign in personal Microsoft accounts cannot register query
    parameters, so a URI with a query matches only if that very URI is registered."""
    return redirect_uri in registered_redirect_uris(client_id)


def unknown_client(client_id: str) -> TokenError:
    return TokenError("unauthorized_client", 700016, f"Application with identifier '{client_id}' was not found "
                      "in the directory 'Microsoft Ads emulator'.")


def check_client(client_id: str, client_secret: str) -> None:
    """A confidential web app must present its id and secret (in the body or as HTTP Basic)."""
    if not client_id:
        raise missing("client_id")
    expected = client_secret_for(client_id)
    if expected is None:
        raise unknown_client(client_id)
    if not client_secret:
        raise TokenError("invalid_client", 7000218, "The request body must contain the following parameter: "
                         "'client_assertion' or 'client_secret'.", status=401)
    if not constant_time_compare(client_secret, expected):
        raise TokenError("invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent "
                         f"in the request is the client secret value, not the client secret ID, for a secret added "
                         f"to app '{client_id}'.", status=401)


def basic_credentials(authorization: str) -> tuple[str, str]:
    """(client_id, client_secret) from an `Authorization: Basic` header, or two empty strings."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        decoded = base64.b64decode(encoded.strip()).decode()
    except (ValueError, UnicodeDecodeError):
        return "", ""
    client_id, _, secret = decoded.partition(":")
    return unquote_plus(client_id), unquote_plus(secret)


# --- Issuing -------------------------------------------------------------------------------

def _create(kind: str, user: EmulatorUser, client_id: str, scope: str, lifetime: timedelta,
            **extra) -> EmulatorToken:
    now = timezone.now()
    return EmulatorToken.objects.create(
        value=_PREFIX[kind] + secrets.token_urlsafe(40), kind=kind, user=user, client_id=client_id,
        scope=scope, created_at=now, expires_at=now + lifetime, **extra)


def issue_code(user: EmulatorUser, client_id: str, scope: str, redirect_uri: str,
               code_challenge: str = "", code_challenge_method: str = "") -> EmulatorToken:
    if code_challenge and not code_challenge_method:
        code_challenge_method = "plain"   # RFC 7636 default
    return _create(EmulatorToken.CODE, user, client_id, scope, CODE_LIFETIME, redirect_uri=redirect_uri,
                   code_challenge=code_challenge, code_challenge_method=code_challenge_method)


def issue_refresh_token(user: EmulatorUser, client_id: str, scope: str) -> EmulatorToken:
    return _create(EmulatorToken.REFRESH, user, client_id, scope, REFRESH_LIFETIME)


def token_response(user: EmulatorUser, client_id: str, scope: str) -> dict:
    """The answer of docs/microsoft-api.md#token-refresh-example. A refresh token only when offline_access was
    consented; scope lists API scopes only."""
    access = _create(EmulatorToken.ACCESS, user, client_id, scope, ACCESS_LIFETIME)
    api_scopes = " ".join(s for s in scope.split() if s not in NON_API_SCOPES)
    answer = {"token_type": "Bearer", "scope": api_scopes, "expires_in": int(ACCESS_LIFETIME.total_seconds()),
              "ext_expires_in": int(ACCESS_LIFETIME.total_seconds()), "access_token": access.value}
    if "offline_access" in scope.split():
        answer["refresh_token"] = issue_refresh_token(user, client_id, scope).value
    return answer


# --- Redeeming -----------------------------------------------------------------------------

def pkce_matches(challenge: str, method: str, verifier: str) -> bool:
    if method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
        computed = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        return constant_time_compare(computed, challenge)
    return constant_time_compare(verifier, challenge)


def redeem_code(params: dict, client_id: str) -> dict:
    """grant_type=authorization_code: the code must be unspent, fresh, for this client and redirect URI."""
    value = params.get("code", "")
    if not value:
        raise missing("code")
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri and not redirect_uri_registered(client_id, redirect_uri):
        # The shape Microsoft Advertising documents for a token request with an unregistered URI:
        # https://learn.microsoft.com/en-us/advertising/guides/handle-service-errors-exceptions?view=bingads-13#invalid-redirect-uri
        raise TokenError("invalid_client", 50011, "The reply URL specified in the request does not match the "
                         f"reply URLs configured for the application: '{client_id}'.")
    code = EmulatorToken.objects.filter(value=value, kind=EmulatorToken.CODE).select_related("user").first()
    if code is None or code.client_id != client_id:
        raise invalid_grant(9002313, "Invalid request. Request is malformed or invalid.")
    if code.used_at is not None:
        raise invalid_grant(54005, "OAuth2 Authorization code was already redeemed, please retry with a new valid "
                                   "code or use an existing refresh token.")
    if code.is_expired:
        raise invalid_grant(70008, "The provided authorization code or refresh token has expired due to "
                                   "inactivity. Send a new interactive authorization request for this user and "
                                   "resource.")
    _check_redirect_and_pkce(code, params)
    if not EmulatorToken.objects.filter(pk=code.pk, used_at__isnull=True).update(used_at=timezone.now()):
        raise invalid_grant(54005, "OAuth2 Authorization code was already redeemed.")
    return token_response(code.user, client_id, code.scope)


def _check_redirect_and_pkce(code: EmulatorToken, params: dict) -> None:
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri != code.redirect_uri:
        raise invalid_grant(500112, f"The reply address '{redirect_uri}' does not match the reply address "
                                    f"'{code.redirect_uri}' provided when requesting Authorization code.")
    if code.code_challenge:
        verifier = params.get("code_verifier", "")
        if not verifier or not pkce_matches(code.code_challenge, code.code_challenge_method, verifier):
            raise invalid_grant(501481, "The Code_Verifier does not match the code_challenge supplied in the "
                                        "authorization request.")


def redeem_refresh_token(params: dict, client_id: str) -> dict:
    """grant_type=refresh_token: returns a new access token and a new (rotated) refresh token."""
    value = params.get("refresh_token", "")
    if not value:
        raise missing("refresh_token")
    token = EmulatorToken.objects.filter(value=value, kind=EmulatorToken.REFRESH).select_related("user").first()
    if token is None or token.client_id != client_id:
        raise invalid_grant(9002313, "Invalid request. Request is malformed or invalid.")
    switches = behaviour.current()
    _check_refresh_token(token, switches.refresh_tokens_revoked, switches.strict_refresh_rotation)
    _check_scope(params.get("scope", ""), token.scope)
    spent = EmulatorToken.objects.filter(pk=token.pk, used_at__isnull=True).update(used_at=timezone.now())
    if not spent and switches.strict_refresh_rotation:
        raise _spent_refresh_token()
    return token_response(token.user, client_id, token.scope)


def _check_refresh_token(token: EmulatorToken, all_revoked: bool, strict: bool) -> None:
    if all_revoked or token.revoked:
        raise invalid_grant(50173, "The provided grant has expired due to it being revoked, a fresh auth token is "
                                   "needed. The user might have changed or reset their password. The grant was "
                                   f"issued on '{token.created_at:%Y-%m-%dT%H:%M:%S}Z'.")
    if token.is_expired:
        raise invalid_grant(700082, "The refresh token has expired due to inactivity. The token was issued on "
                                    f"{token.created_at:%Y-%m-%dT%H:%M:%S}Z and was inactive for 90.00:00:00.")
    if strict and token.used_at is not None:
        raise _spent_refresh_token()


def _spent_refresh_token() -> TokenError:
    return invalid_grant(70008, "The provided authorization code or refresh token has expired due to inactivity. "
                                "Send a new interactive authorization request for this user and resource. "
                                "(Emulator: this refresh token was already used; keep the rotated one.)")


def _check_scope(requested: str, granted: str) -> None:
    extra = {s for s in requested.split() if s not in NON_API_SCOPES} - set(granted.split())
    if extra:
        raise invalid_grant(70000, "The request was denied because one or more scopes requested are unauthorized "
                                   "or expired. The user must first sign in and grant the client application access "
                                   "to the requested scope.")
