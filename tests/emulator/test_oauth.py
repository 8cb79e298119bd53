"""The emulator's authorize and token endpoints refuse redirect URIs the app did not register.

https://learn.microsoft.com/en-us/entra/identity-platform/reply-url
https://learn.microsoft.com/en-us/advertising/guides/handle-service-errors-exceptions?view=bingads-13#invalid-redirect-uri
"""

from __future__ import annotations

import base64
import gc
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.conf import settings as django_settings

from adsync.microsoft import oauth
from emulator.models import (
    EmulatorApp,
    EmulatorToken,
    EmulatorUser,
    adsync_callback_uri,
)
from tests.emulator.support import AUTHORIZE, SCOPE, TOKEN, point_adsync_at

pytestmark = pytest.mark.django_db

CALLBACK_PATH = "/adsync/oauth/microsoft/callback/"
VERIFIER = "v" * 50


@pytest.fixture(autouse=True)
def public_url(settings):
    settings.ADSYNC_PUBLIC_URL = "https://adsync.example.com"


def authorize_params(**overrides) -> dict:
    challenge = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).decode().rstrip("=")
    params = {"response_type": "code", "client_id": django_settings.MICROSOFT_ADS_CLIENT_ID,
              "redirect_uri": adsync_callback_uri(), "scope": SCOPE, "state": "xyz", "prompt": "select_account",
              "code_challenge": challenge, "code_challenge_method": "S256"}
    return {**params, **overrides}


def accept(client, **overrides):
    user = EmulatorUser.objects.get(user_name="demo.admin")
    return client.post(AUTHORIZE, {**authorize_params(**overrides), "user": user.user_id, "decision": "accept"})


def redeem(client, code: str, **params):
    base = {"client_id": django_settings.MICROSOFT_ADS_CLIENT_ID,
            "client_secret": django_settings.MICROSOFT_ADS_CLIENT_SECRET, "grant_type": "authorization_code",
            "code": code, "redirect_uri": adsync_callback_uri(), "code_verifier": VERIFIER}
    return client.post(TOKEN, {**base, **params})


def code_from(response) -> str:
    return parse_qs(urlsplit(response["Location"]).query)["code"][0]


# --- Authorize ---------------------------------------------------------------------------------

def test_the_registered_uri_of_the_default_app_is_adsyncs_callback_at_the_public_url(client, demo):
    response = accept(client)

    assert adsync_callback_uri() == "https://adsync.example.com" + CALLBACK_PATH
    assert response.status_code == 302 and response["Location"].startswith(adsync_callback_uri() + "?code=")


@pytest.mark.parametrize("redirect_uri", [
    "https://attacker.example.net/adsync/oauth/microsoft/callback/",
    "https://adsync.example.com/adsync/oauth/microsoft/callback",            # no trailing slash
    "https://adsync.example.com/ADSYNC/oauth/microsoft/callback/",           # case matters
    "http://adsync.example.com/adsync/oauth/microsoft/callback/",            # another scheme
    "https://adsync.example.com/adsync/oauth/microsoft/callback/?next=/x",   # a query not registered
    "",
])
def test_an_unregistered_redirect_uri_gets_an_error_page_and_is_never_redirected_to(client, demo, redirect_uri):
    shown = client.get(AUTHORIZE, authorize_params(redirect_uri=redirect_uri))
    accepted = accept(client, redirect_uri=redirect_uri)

    for response in (shown, accepted):
        page = response.content.decode()
        assert response.status_code == 400 and "Location" not in response
        assert "AADSTS50011" in page and "Permissions requested" not in page
        assert (f"The redirect URI &#x27;{redirect_uri}&#x27; specified in the request does not match the redirect "
                f"URIs configured for the application &#x27;{django_settings.MICROSOFT_ADS_CLIENT_ID}&#x27;") in page
    assert not EmulatorToken.objects.filter(kind=EmulatorToken.CODE).exists()


def test_errors_meant_for_the_app_are_not_sent_to_an_unregistered_uri_either(client, demo):
    unregistered = "https://attacker.example.net/cb"

    for overrides in ({"prompt": "none"}, {"response_type": "token"}, {"scope": ""}):
        response = client.get(AUTHORIZE, authorize_params(redirect_uri=unregistered, **overrides))
        assert response.status_code == 400 and "Location" not in response
    cancelled = client.post(AUTHORIZE, {**authorize_params(redirect_uri=unregistered), "decision": "cancel"})
    assert cancelled.status_code == 400 and "Location" not in cancelled


def test_the_registered_uri_follows_the_public_url_setting(client, demo, settings):
    settings.ADSYNC_PUBLIC_URL = "http://127.0.0.1:8123/"

    moved = accept(client, redirect_uri="http://127.0.0.1:8123" + CALLBACK_PATH)
    old = accept(client, redirect_uri="https://adsync.example.com" + CALLBACK_PATH)

    assert moved.status_code == 302 and old.status_code == 400


def test_an_oauth_app_row_registers_its_own_uris_one_per_line(client, demo):
    EmulatorApp.objects.create(client_id="own-app", client_secret="own-secret",
                               redirect_uris="https://one.example.com/cb\n  https://two.example.com/cb  \n\n")

    one = accept(client, client_id="own-app", redirect_uri="https://one.example.com/cb")
    two = accept(client, client_id="own-app", redirect_uri="https://two.example.com/cb")
    callback = accept(client, client_id="own-app", redirect_uri=adsync_callback_uri())

    assert (one.status_code, two.status_code, callback.status_code) == (302, 302, 400)
    assert "&#x27;own-app&#x27;" in callback.content.decode()


def test_a_new_oauth_app_row_registers_adsyncs_callback_by_default(client, demo):
    app = EmulatorApp.objects.create(client_id="own-app", client_secret="own-secret")

    assert app.registered_redirect_uris() == ["https://adsync.example.com" + CALLBACK_PATH]
    assert accept(client, client_id="own-app").status_code == 302


# --- Token -------------------------------------------------------------------------------------

def test_a_code_exchange_with_an_unregistered_redirect_uri_is_invalid_client_50011(client, demo):
    code = code_from(accept(client))

    response = redeem(client, code, redirect_uri="https://attacker.example.net/cb")

    body = response.json()
    assert (response.status_code, body["error"], body["error_codes"]) == (400, "invalid_client", [50011])
    assert body["error_description"].startswith(
        "AADSTS50011: The reply URL specified in the request does not match the reply URLs configured for the "
        f"application: '{django_settings.MICROSOFT_ADS_CLIENT_ID}'.")
    assert redeem(client, code).status_code == 200   # the code was not spent by the refused call


def test_a_code_exchange_with_another_registered_uri_than_the_authorize_request_is_invalid_grant(client, demo):
    EmulatorApp.objects.create(client_id="own-app", client_secret="own-secret",
                               redirect_uris="https://one.example.com/cb\nhttps://two.example.com/cb")
    code = code_from(accept(client, client_id="own-app", redirect_uri="https://one.example.com/cb"))

    response = redeem(client, code, client_id="own-app", client_secret="own-secret",
                      redirect_uri="https://two.example.com/cb")

    body = response.json()
    assert (response.status_code, body["error"], body["error_codes"]) == (400, "invalid_grant", [500112])


def test_a_code_exchange_without_a_redirect_uri_is_invalid_grant(client, demo):
    response = redeem(client, code_from(accept(client)), redirect_uri="")

    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


# --- adsync's OAuth code, over HTTP ------------------------------------------------------------

@pytest.fixture
def live(live_server, settings, demo):
    point_adsync_at(live_server, settings)
    settings.ADSYNC_PUBLIC_URL = live_server.url
    yield live_server
    gc.collect()   # see docs/emulator.md, "Using it in tests"


def test_adsyncs_authorization_url_with_its_callback_reaches_the_consent_page_over_http(live):
    url = oauth.authorization_url(django_settings.MICROSOFT_ADS_CLIENT_ID, live.url + CALLBACK_PATH, "st4te",
                                  oauth.new_code_verifier(), "select_account")

    page = requests.get(url, timeout=10)

    assert page.status_code == 200 and "Permissions requested" in page.text


def test_adsyncs_authorization_url_with_another_uri_gets_the_aadsts50011_page_over_http(live):
    url = oauth.authorization_url(django_settings.MICROSOFT_ADS_CLIENT_ID, live.url + "/somewhere/else/", "st4te",
                                  oauth.new_code_verifier(), "select_account")

    page = requests.get(url, timeout=10, allow_redirects=False)

    assert page.status_code == 400 and "AADSTS50011" in page.text and "Location" not in page.headers


def test_the_oauth_app_admin_form_offers_adsyncs_callback_as_the_default(admin_client, demo):
    page = admin_client.get("/admin/emulator/emulatorapp/add/").content.decode()

    assert 'name="redirect_uris"' in page and adsync_callback_uri() in page
