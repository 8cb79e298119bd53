"""Microsoft identity platform (OAuth 2.0) for Microsoft Advertising, through requests-oauthlib.

Reference: docs/microsoft-api.md#oauth (endpoints, scopes, token errors).
Authorize: MICROSOFT_ADS_OAUTH_AUTHORIZE_URL; token: MICROSOFT_ADS_OAUTH_TOKEN_URL.
Token-endpoint failures become MicrosoftAdsError: invalid_grant → RECONNECT (the card shows
Token expired), 5xx and network → TRANSIENT (retried later, state unchanged).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import requests
from django.utils import timezone
from oauthlib.oauth2 import OAuth2Error
from requests_oauthlib import OAuth2Session

from adsync.conf import conf
from adsync.microsoft.errors import Kind, MicrosoftAdsError
from adsync.microsoft.http import USER_AGENT

# Microsoft answers with fewer scopes than asked (offline_access is not echoed): not an error.
os.environ.setdefault("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "testserver"}


def _allow_plain_http_for_loopback(url: str) -> None:
    """oauthlib insists on HTTPS; the built-in emulator and test doubles live on loopback over HTTP."""
    parts = urlsplit(url)
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"


@dataclass
class TokenSet:
    access_token: str
    refresh_token: str
    expires_at: datetime

    @classmethod
    def from_response(cls, token: dict, previous_refresh_token: str = "") -> TokenSet:
        expires_in = int(token.get("expires_in") or 3600)
        return cls(
            access_token=token["access_token"],
            # Rotation: always keep the new refresh token; fall back only if none was returned.
            refresh_token=token.get("refresh_token") or previous_refresh_token,
            expires_at=timezone.now() + timedelta(seconds=expires_in),
        )


def scope() -> list[str]:
    return conf.oauth_scope.split()


def _raise_on_server_error(response: requests.Response) -> requests.Response:
    """Compliance hook: a 5xx or non-JSON answer is transient, not a parse error deep in oauthlib."""
    if response.status_code >= 500:
        raise MicrosoftAdsError(f"HTTP {response.status_code} from the token endpoint", kind=Kind.TRANSIENT,
                                http_status=response.status_code)
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "error" not in body:
            raise MicrosoftAdsError(f"HTTP {response.status_code} from the token endpoint: {response.text[:300]}",
                                    kind=Kind.TRANSIENT if response.status_code == 429 else Kind.REVIEW,
                                    http_status=response.status_code)
    return response


def _session(client_id: str, **kwargs) -> OAuth2Session:
    oauth = OAuth2Session(client_id, scope=scope(), **kwargs)
    oauth.headers["User-Agent"] = USER_AGENT
    oauth.register_compliance_hook("access_token_response", _raise_on_server_error)
    oauth.register_compliance_hook("refresh_token_response", _raise_on_server_error)
    return oauth


def _token_error(exc: OAuth2Error) -> MicrosoftAdsError:
    """invalid_grant means revoked / expired / re-consent needed: reconnect, never retry."""
    message = exc.description or exc.error
    kind = Kind.RECONNECT if exc.error in {"invalid_grant", "interaction_required", "consent_required"} else Kind.REVIEW
    return MicrosoftAdsError(message, kind=kind, error_code=exc.error, http_status=exc.status_code)


def new_state() -> str:
    """An unguessable `state` for one authorization request (CSRF protection, checked on return)."""
    return secrets.token_urlsafe(32)


def new_code_verifier() -> str:
    """A PKCE code verifier: 86 characters from the unreserved set (RFC 7636 allows 43-128)."""
    return secrets.token_urlsafe(64)


def code_challenge(code_verifier: str) -> str:
    """The S256 challenge: base64url(SHA-256(verifier)) without padding (RFC 7636 §4.2)."""
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_url(client_id: str, redirect_uri: str, state: str, code_verifier: str, prompt: str) -> str:
    """Where to send the browser for consent (docs/microsoft-api.md#oauth, "Authorize parameters").

    `prompt` is `select_account` on a first Connect and `consent` on Reconnect, so a revoked or
    changed consent is asked for again instead of silently reusing the old grant.
    """
    oauth = _session(client_id, redirect_uri=redirect_uri)
    _allow_plain_http_for_loopback(conf.oauth_authorize_url)
    url, _ = oauth.authorization_url(
        conf.oauth_authorize_url,
        state=state,
        prompt=prompt,
        response_mode="query",
        code_challenge=code_challenge(code_verifier),
        code_challenge_method="S256",
    )
    return url


def exchange_code(client_id: str, client_secret: str, code: str, redirect_uri: str, code_verifier: str) -> TokenSet:
    """Trade an authorization code for tokens, proving PKCE with the verifier kept in the session.

    `redirect_uri` must be byte-for-byte the one sent to the authorize endpoint (docs/microsoft-api.md#oauth).
    """
    oauth = _session(client_id, redirect_uri=redirect_uri)
    with _token_endpoint_errors():
        token = oauth.fetch_token(
            conf.oauth_token_url,
            code=code,
            client_secret=client_secret,
            include_client_id=True,
            code_verifier=code_verifier,
            timeout=conf.timeout,
        )
    return TokenSet.from_response(token)


def refresh(client_id: str, client_secret: str, refresh_token: str) -> TokenSet:
    """Spend a refresh token for a new access token and a new (rotated) refresh token."""
    oauth = _session(client_id)
    with _token_endpoint_errors():
        token = oauth.refresh_token(
            conf.oauth_token_url,
            refresh_token=refresh_token,
            client_id=client_id,
            client_secret=client_secret,
            include_client_id=True,
            timeout=conf.timeout,
        )
    return TokenSet.from_response(token, refresh_token)


@contextmanager
def _token_endpoint_errors():
    """One translation for every token call: OAuth errors classified, network failures transient."""
    _allow_plain_http_for_loopback(conf.oauth_token_url)
    try:
        yield
    except OAuth2Error as exc:
        raise _token_error(exc) from None
    except requests.RequestException as exc:
        raise MicrosoftAdsError(f"Network error calling the token endpoint: {exc.__class__.__name__}",
                                kind=Kind.TRANSIENT) from None
