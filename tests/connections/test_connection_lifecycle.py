"""Connect, the account picker, token refresh, Reconnect, Disconnect and the card.

Microsoft is answered at the HTTP boundary (`responses`), and once end to end by the built-in
emulator over real HTTP (live_server).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from io import StringIO
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import time_machine
from cryptography.fernet import Fernet
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from adsync import jobs
from adsync.connections import health, tokens
from adsync.connections.lifecycle import redirect_uri, refresh_due_tokens
from adsync.jobs import run_flush as flush_conversions
from adsync.jobs import schedules
from adsync.microsoft.customer import CustomerClient
from adsync.microsoft.errors import Kind, MicrosoftAdsError
from adsync.microsoft.oauth import code_challenge
from adsync.models import Connection, GoalMapping, Push
from tests.conftest import APPLY_URL, AUTHORIZE_URL, CUSTOMER, GOALS_URL, TOKEN_URL, run_queued_jobs

pytestmark = pytest.mark.django_db

GET_USER_URL = CUSTOMER + "/CustomerManagement/v13/User/Query"
SEARCH_URL = CUSTOMER + "/CustomerManagement/v13/Accounts/Search"
STORE, AGENCY = "187654321", "187654322"


def token_json(access: str = "access-new", refresh: str = "refresh-new") -> dict:
    return {"token_type": "Bearer", "scope": "https://ads.microsoft.com/msads.manage", "expires_in": 3600,
            "ext_expires_in": 3600, "access_token": access, "refresh_token": refresh}


def invalid_grant(text: str = "AADSTS700082: The refresh token has expired due to inactivity.") -> dict:
    return {"json": {"error": "invalid_grant", "error_description": text, "error_codes": [700082]}, "status": 400}


def account_json(account_id: str, name: str, number: str, status: str = "Active") -> dict:
    return {"Id": account_id, "ParentCustomerId": "251234567", "Name": name, "Number": number,
            "CurrencyCode": "USD", "AccountLifeCycleStatus": status}


ACCOUNTS = [account_json(STORE, "Demo Store", "F1DEMO01"), account_json(AGENCY, "Agency Client", "F1DEMO02", "Pause")]


def mock_consent(mocked, role_id: int = 41, accounts: list[dict] | None = None) -> None:
    """Token exchange, GetUser and SearchAccounts as Microsoft answers them after a consent."""
    mocked.post(TOKEN_URL, json=token_json())
    mocked.post(GET_USER_URL, json={
        "User": {"Id": "900001", "UserName": "dana@example.com"},
        "CustomerRoles": [{"CustomerId": "251234567", "AccountIds": None, "LinkedAccountIds": None,
                           "RoleId": role_id}],
    })
    mocked.post(SEARCH_URL, json={"Accounts": ACCOUNTS if accounts is None else accounts})


def start(client, conn: Connection, action: str = "connect") -> dict:
    """Click Connect/Reconnect; returns the authorize request's query parameters."""
    response = client.get(reverse(f"admin:adsync_connection_{action}", args=[conn.pk]))
    assert response.status_code == 302
    assert response["Location"].startswith(AUTHORIZE_URL + "?")
    return dict(parse_qsl(urlsplit(response["Location"]).query))


def callback(client, **params):
    return client.get(reverse("adsync:oauth-callback"), params)


def pick_url(conn: Connection) -> str:
    return reverse("admin:adsync_connection_pick_account", args=[conn.pk])


def card_url(conn: Connection) -> str:
    return reverse("admin:adsync_connection_change", args=[conn.pk])


def messages_of(response) -> str:
    return " | ".join(str(m) for m in get_messages(response.wsgi_request))


def connect_through_picker(client, mocked, conn: Connection, action: str = "connect", **picked) -> None:
    params = start(client, conn, action)
    mock_consent(mocked)
    assert callback(client, code="the-code", state=params["state"])["Location"] == pick_url(conn)
    client.post(pick_url(conn), {"account_id": STORE, **picked})


@pytest.fixture
def new_connection(site) -> Connection:
    conn = Connection.objects.create(site=site)
    GoalMapping.objects.create(connection=conn, event_name="purchase", goal_name="Purchase")
    return conn


# --- Connect: the authorize request -----------------------------------------------------------


def test_connect_sends_the_browser_to_microsoft_with_state_pkce_and_account_selection(admin_client, new_connection):
    params = start(admin_client, new_connection)

    assert params["response_type"] == "code"
    assert params["client_id"] == "client-id"
    assert params["redirect_uri"] == redirect_uri() == "http://127.0.0.1:8000/adsync/oauth/microsoft/callback/"
    assert set(params["scope"].split()) == {"https://ads.microsoft.com/msads.manage", "offline_access"}
    assert params["prompt"] == "select_account"
    assert params["code_challenge_method"] == "S256"
    assert len(params["state"]) >= 32 and len(params["code_challenge"]) == 43


def test_reconnect_asks_for_consent_again(admin_client, connection):
    assert start(admin_client, connection, "reconnect")["prompt"] == "consent"


def test_a_per_connection_client_id_is_used_for_the_authorize_request(admin_client, site):
    conn = Connection.objects.create(site=site, client_id="own-app-id", client_secret="own-secret")

    assert start(admin_client, conn)["client_id"] == "own-app-id"


# --- Connect: the callback ---------------------------------------------------------------------


def test_a_callback_whose_state_does_not_match_changes_nothing(admin_client, mocked, new_connection):
    start(admin_client, new_connection)

    response = callback(admin_client, code="stolen-code", state="forged-state")

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:adsync_connection_changelist")
    assert "state did not match" in messages_of(response)
    assert len(mocked.calls) == 0
    new_connection.refresh_from_db()
    assert (new_connection.status, new_connection.refresh_token) == (Connection.DISCONNECTED, "")


def test_a_state_works_only_once(admin_client, mocked, new_connection):
    params = start(admin_client, new_connection)
    mock_consent(mocked)
    callback(admin_client, code="the-code", state=params["state"])

    replay = callback(admin_client, code="the-code", state=params["state"])

    assert "state did not match" in messages_of(replay)
    assert [c.request.url for c in mocked.calls].count(TOKEN_URL) == 1


def test_a_cancelled_consent_says_so_with_microsofts_words_and_changes_nothing(admin_client, mocked, new_connection):
    params = start(admin_client, new_connection)

    response = callback(admin_client, state=params["state"], error="access_denied",
                        error_description="AADSTS65004: User declined to consent to access the app.")

    assert response["Location"] == card_url(new_connection)
    text = messages_of(response)
    assert "Consent was cancelled" in text
    assert "AADSTS65004: User declined to consent to access the app." in text
    assert len(mocked.calls) == 0
    new_connection.refresh_from_db()
    assert new_connection.status == Connection.DISCONNECTED


def test_a_microsoft_error_on_the_callback_is_shown_verbatim(admin_client, new_connection):
    params = start(admin_client, new_connection)
    description = "AADSTS50011: The redirect URI specified in the request does not match."

    response = callback(admin_client, state=params["state"], error="invalid_request", error_description=description)

    assert response["Location"] == card_url(new_connection)
    assert f"invalid_request: {description}" in messages_of(response)


def test_the_code_exchange_sends_the_pkce_verifier_and_the_same_redirect_uri(admin_client, mocked, new_connection):
    params = start(admin_client, new_connection)
    mock_consent(mocked)

    response = callback(admin_client, code="the-code", state=params["state"])

    assert response["Location"] == pick_url(new_connection)
    token_call = dict(parse_qsl(mocked.calls[0].request.body))
    assert token_call["grant_type"] == "authorization_code"
    assert token_call["code"] == "the-code"
    assert token_call["redirect_uri"] == params["redirect_uri"]
    assert (token_call["client_id"], token_call["client_secret"]) == ("client-id", "client-secret")
    assert code_challenge(token_call["code_verifier"]) == params["code_challenge"]


def test_accounts_are_listed_by_user_id_after_get_user(admin_client, mocked, new_connection):
    params = start(admin_client, new_connection)
    mock_consent(mocked)

    callback(admin_client, code="the-code", state=params["state"])

    get_user, search = mocked.calls[1].request, mocked.calls[2].request
    assert json.loads(get_user.body) == {"UserId": None}
    assert get_user.headers["Authorization"] == "Bearer access-new"
    assert get_user.headers["DeveloperToken"] == "dev-token"
    assert "CustomerAccountId" not in get_user.headers
    body = json.loads(search.body)
    assert body["Predicates"] == [{"Field": "UserId", "Operator": "Equals", "Value": "900001"}]
    assert body["PageInfo"] == {"Index": 0, "Size": 1000}


@pytest.mark.parametrize("failure", [
    {"body": requests.ConnectionError("connection refused")},
    {"body": requests.Timeout("read timed out")},
    {"status": 503, "body": "Service Unavailable"},
    {"status": 200, "body": "<html>not json</html>"},
])
def test_the_callback_never_answers_500_when_the_token_endpoint_fails(admin_client, mocked, new_connection, failure):
    params = start(admin_client, new_connection)
    mocked.post(TOKEN_URL, **failure)

    response = callback(admin_client, code="the-code", state=params["state"])

    assert response.status_code == 302
    assert response["Location"] == card_url(new_connection)
    assert "Could not finish connecting" in messages_of(response)
    new_connection.refresh_from_db()
    assert (new_connection.status, new_connection.access_token) == (Connection.DISCONNECTED, "")


@pytest.mark.parametrize("failure", [
    {"body": requests.ConnectionError("connection refused")},
    {"status": 500, "json": {"TrackingId": "t", "OperationErrors": [{"Code": 0, "Message": "An internal error."}]}},
])
def test_the_callback_never_answers_500_when_the_account_listing_fails(admin_client, mocked, new_connection, failure):
    params = start(admin_client, new_connection)
    mocked.post(TOKEN_URL, json=token_json())
    mocked.post(GET_USER_URL, **failure)

    response = callback(admin_client, code="the-code", state=params["state"])

    assert response["Location"] == card_url(new_connection)
    assert "Could not finish connecting" in messages_of(response)


def test_an_invalid_grant_on_the_code_exchange_is_shown_verbatim(admin_client, mocked, new_connection):
    params = start(admin_client, new_connection)
    mocked.post(TOKEN_URL, **invalid_grant("AADSTS54005: OAuth2 Authorization code was already redeemed."))

    response = callback(admin_client, code="the-code", state=params["state"])

    assert "AADSTS54005: OAuth2 Authorization code was already redeemed." in messages_of(response)


# --- The account picker ------------------------------------------------------------------------


def test_the_picker_lists_name_number_id_currency_and_status(admin_client, mocked, new_connection):
    params = start(admin_client, new_connection)
    mock_consent(mocked)
    callback(admin_client, code="the-code", state=params["state"])

    page = admin_client.get(pick_url(new_connection)).content.decode()

    for text in ["Demo Store", "F1DEMO01", STORE, "251234567", "USD", "Active", "Agency Client", "F1DEMO02", "Pause"]:
        assert text in page
    assert "Viewer" not in page


def test_picking_an_account_stores_its_ids_and_tokens_and_makes_the_card_active(admin_client, mocked, new_connection):
    connect_through_picker(admin_client, mocked, new_connection)

    conn = Connection.objects.get(pk=new_connection.pk)
    assert conn.status == Connection.ACTIVE
    assert (conn.account_id, conn.customer_id, conn.account_name, conn.account_number) == (
        STORE, "251234567", "Demo Store", "F1DEMO01")
    assert (conn.access_token, conn.refresh_token) == ("access-new", "refresh-new")
    assert conn.token_expires_at > timezone.now() + timedelta(minutes=55)
    page = admin_client.get(card_url(conn)).content.decode()
    assert "Account ID <strong>187654321</strong>" in page


def test_the_picker_warns_when_the_microsoft_user_is_a_viewer(admin_client, mocked, new_connection):
    params = start(admin_client, new_connection)
    mock_consent(mocked, role_id=100)
    callback(admin_client, code="the-code", state=params["state"])

    page = admin_client.get(pick_url(new_connection)).content.decode()

    assert "Viewer: cannot upload conversions" in page
    assert "Standard access or more" in page


def test_reconnect_preselects_the_connected_account(admin_client, mocked, connection):
    params = start(admin_client, connection, "reconnect")
    mock_consent(mocked)
    callback(admin_client, code="the-code", state=params["state"])

    page = admin_client.get(pick_url(connection)).content.decode()

    assert f'value="{STORE}" id="account-{STORE}"\n                 checked' in page
    assert "(connected so far)" in page


def test_switching_to_another_account_needs_an_explicit_confirmation(admin_client, mocked, connection):
    params = start(admin_client, connection, "reconnect")
    mock_consent(mocked)
    callback(admin_client, code="the-code", state=params["state"])

    refused = admin_client.post(pick_url(connection), {"account_id": AGENCY})
    connection.refresh_from_db()
    assert refused.status_code == 400
    assert "Tick the confirmation to switch" in refused.content.decode()
    assert connection.account_id == STORE

    admin_client.post(pick_url(connection), {"account_id": AGENCY, "confirm_switch": "on"})
    connection.refresh_from_db()
    assert (connection.account_id, connection.account_name) == (AGENCY, "Agency Client")


def test_an_account_not_offered_by_microsoft_cannot_be_picked(admin_client, mocked, new_connection):
    params = start(admin_client, new_connection)
    mock_consent(mocked)
    callback(admin_client, code="the-code", state=params["state"])

    response = admin_client.post(pick_url(new_connection), {"account_id": "999"})

    assert response.status_code == 400
    assert Connection.objects.get(pk=new_connection.pk).status == Connection.DISCONNECTED


def test_accounts_are_read_page_by_page(mocked):
    page = [account_json(str(100000000 + i), f"Account {i}", f"F{i:07d}") for i in range(1000)]
    mocked.post(GET_USER_URL, json={"User": {"Id": "900001"}, "CustomerRoles": []})
    mocked.post(SEARCH_URL, json={"Accounts": page})
    mocked.post(SEARCH_URL, json={"Accounts": ACCOUNTS})

    accounts = CustomerClient(access_token="access").reachable_accounts()

    assert len(accounts) == 1002
    indexes = [json.loads(c.request.body)["PageInfo"]["Index"] for c in mocked.calls if c.request.url == SEARCH_URL]
    assert indexes == [0, 1]


# --- Token refresh ----------------------------------------------------------------------------

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=dt_timezone.utc)


def test_a_token_is_refreshed_a_few_minutes_before_expiry_and_not_before(mocked, site, make_connection):
    with time_machine.travel(T0, tick=False):
        conn = make_connection(site, token_expires_at=T0 + timedelta(hours=1))
    mocked.post(TOKEN_URL, json=token_json("access-2", "refresh-2"))

    with time_machine.travel(T0 + timedelta(minutes=50), tick=False):
        assert tokens.access_token_for(conn) == "access-1"
    assert len(mocked.calls) == 0

    with time_machine.travel(T0 + timedelta(minutes=56), tick=False):
        assert tokens.access_token_for(conn) == "access-2"
    assert len(mocked.calls) == 1


def test_every_refresh_saves_the_rotated_refresh_token_and_spends_it_next_time(mocked, site, make_connection):
    conn = make_connection(site, token_expires_at=timezone.now() - timedelta(minutes=1))
    mocked.post(TOKEN_URL, json=token_json("access-2", "refresh-2"))
    mocked.post(TOKEN_URL, json=token_json("access-3", "refresh-3"))

    tokens.refresh(conn, stale_access_token="access-1")
    stored = Connection.objects.get(pk=conn.pk)
    tokens.refresh(stored, stale_access_token="access-2")

    spent = [dict(parse_qsl(c.request.body))["refresh_token"] for c in mocked.calls]
    assert spent == ["refresh-1", "refresh-2"]
    assert Connection.objects.get(pk=conn.pk).refresh_token == "refresh-3"


def test_invalid_grant_sets_token_expired_with_microsofts_reason(mocked, site, make_connection):
    conn = make_connection(site, token_expires_at=timezone.now() - timedelta(minutes=1))
    mocked.post(TOKEN_URL, **invalid_grant())

    with pytest.raises(MicrosoftAdsError):
        tokens.access_token_for(conn)

    conn.refresh_from_db()
    assert conn.status == Connection.TOKEN_EXPIRED
    assert "AADSTS700082: The refresh token has expired due to inactivity." in conn.last_error


@pytest.mark.parametrize("failure", [
    {"status": 503, "json": {"error": "temporarily_unavailable"}},
    {"status": 500, "body": "Internal Server Error"},
    {"body": requests.ConnectionError("connection refused")},
])
def test_a_transient_refresh_failure_leaves_the_state_and_tokens_unchanged(mocked, site, make_connection, failure):
    conn = make_connection(site, token_expires_at=timezone.now() - timedelta(minutes=1))
    mocked.post(TOKEN_URL, **failure)

    report = refresh_due_tokens(timezone.now() + tokens.REFRESH_MARGIN + timedelta(days=8))

    conn.refresh_from_db()
    assert report.retry_later == [conn.pk]
    assert conn.status == Connection.ACTIVE
    assert (conn.access_token, conn.refresh_token) == ("access-1", "refresh-1")
    assert (conn.last_error_operation, conn.last_error_kind) == (Connection.TOKEN_REFRESH, "transient")


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(db_connection.vendor == "sqlite",
                    reason="SQLite's shared in-memory test database can fail concurrent writers with 'table is "
                           "locked' (about 1 run in 50 here); CI runs this on PostgreSQL")
def test_two_workers_refreshing_at_once_spend_the_refresh_token_once(mocked, site, make_connection):
    conn = make_connection(site, token_expires_at=timezone.now() - timedelta(minutes=1))
    live = {"refresh-1"}
    spent = []

    def token_endpoint(request):
        presented = dict(parse_qsl(request.body))["refresh_token"]
        spent.append(presented)
        time.sleep(0.3)  # the first worker is still inside Microsoft when the second one arrives
        if presented not in live:
            return 400, {}, json.dumps({"error": "invalid_grant", "error_description": "AADSTS70008: spent."})
        live.discard(presented)
        return 200, {}, json.dumps(token_json(f"access-{len(spent) + 1}", f"refresh-{len(spent) + 1}"))

    mocked.add_callback("POST", TOKEN_URL, callback=token_endpoint)
    barrier, results = threading.Barrier(2), []

    def worker():
        from django.db import connection as thread_db

        barrier.wait()
        results.append(tokens.access_token_for(Connection.objects.get(pk=conn.pk)))
        thread_db.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert spent == ["refresh-1"]
    assert results == ["access-2", "access-2"]
    conn.refresh_from_db()
    assert (conn.status, conn.refresh_token) == (Connection.ACTIVE, "refresh-2")


# --- The refresh schedule ---------------------------------------------------------------------


def test_the_refresh_schedule_is_registered_every_10_minutes():
    spec = next(s for s in schedules() if s["name"] == "adsync:refresh-tokens")
    assert (spec["func"], spec["minutes"]) == ("adsync.jobs.refresh_tokens", 10)


def test_the_schedule_refreshes_a_token_about_to_expire_while_pushes_wait(mocked, site, make_connection,
                                                                          make_conversion):
    conn = make_connection(site, token_expires_at=timezone.now() + timedelta(minutes=12),
                           refreshed_at=timezone.now() - timedelta(minutes=48))
    make_conversion(site)
    mocked.post(TOKEN_URL, json=token_json("access-2", "refresh-2"))

    report = refresh_due_tokens()

    assert report.refreshed == [conn.pk] and len(mocked.calls) == 1
    assert Connection.objects.get(pk=conn.pk).refresh_token == "refresh-2"


@pytest.mark.parametrize("expires_in, refreshed_ago, queued", [
    (timedelta(minutes=40), timedelta(minutes=20), True),   # in use, but not expiring soon
    (timedelta(minutes=-30), timedelta(days=1), False),     # idle and refreshed recently
])
def test_the_schedule_leaves_tokens_alone_when_no_refresh_is_needed(mocked, site, make_connection, make_conversion,
                                                                      expires_in, refreshed_ago, queued):
    make_connection(site, token_expires_at=timezone.now() + expires_in, refreshed_at=timezone.now() - refreshed_ago)
    if queued:
        make_conversion(site)

    refresh_due_tokens()

    assert len(mocked.calls) == 0


def test_the_schedule_refreshes_an_idle_connection_every_week(mocked, site, make_connection):
    conn = make_connection(site, token_expires_at=timezone.now() - timedelta(days=8),
                           refreshed_at=timezone.now() - timedelta(days=8))
    mocked.post(TOKEN_URL, json=token_json("access-2", "refresh-2"))

    report = refresh_due_tokens()

    assert report.refreshed == [conn.pk]
    assert Connection.objects.get(pk=conn.pk).refreshed_at > timezone.now() - timedelta(minutes=1)


def test_the_schedule_marks_a_revoked_connection_token_expired_and_skips_it_afterwards(mocked, site,
                                                                                        make_connection):
    conn = make_connection(site, refreshed_at=None)
    mocked.post(TOKEN_URL, **invalid_grant("AADSTS50173: The provided grant has expired due to it being revoked."))

    first = refresh_due_tokens()
    second = refresh_due_tokens()

    assert first.expired == [conn.pk] and second.expired == []
    assert len(mocked.calls) == 1
    conn.refresh_from_db()
    assert conn.status == Connection.TOKEN_EXPIRED
    assert "AADSTS50173" in conn.last_error


# --- Secrets at rest ---------------------------------------------------------------------------


def raw_secrets(conn: Connection) -> tuple[str, str, str]:
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT access_token, refresh_token, client_secret FROM adsync_connection WHERE id = %s",
                       [conn.pk])
        return cursor.fetchone()


def test_tokens_and_the_client_secret_are_encrypted_in_the_database(site, make_connection):
    conn = make_connection(site, access_token="plain-access-token", refresh_token="plain-refresh-token",
                           client_id="own-app", client_secret="plain-client-secret")

    stored = raw_secrets(conn)

    assert all(value.startswith("gAAAA") for value in stored)  # Fernet tokens
    for plaintext in ("plain-access-token", "plain-refresh-token", "plain-client-secret"):
        assert not any(plaintext in value for value in stored)
    assert Connection.objects.get(pk=conn.pk).refresh_token == "plain-refresh-token"


def test_rotate_encryption_moves_every_secret_to_the_newest_key(settings, site, make_connection):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.ADSYNC_ENCRYPTION_KEYS = [old_key]
    conn = make_connection(site, client_id="own-app", client_secret="app-secret")
    settings.ADSYNC_ENCRYPTION_KEYS = [new_key, old_key]
    out = StringIO()

    call_command("rotate_encryption", stdout=out)

    assert "adsync.Connection.refresh_token: 1 value(s) re-encrypted" in out.getvalue()
    settings.ADSYNC_ENCRYPTION_KEYS = [new_key]  # the old key can now be dropped
    conn = Connection.objects.get(pk=conn.pk)
    assert (conn.access_token, conn.refresh_token, conn.client_secret) == ("access-1", "refresh-1", "app-secret")
    assert all(value.startswith("gAAAA") for value in raw_secrets(conn))


# --- Disconnect and Reconnect ---------------------------------------------------------------------


def test_disconnect_asks_for_confirmation_first(admin_client, connection):
    page = admin_client.get(reverse("admin:adsync_connection_disconnect", args=[connection.pk]))

    assert "Yes, disconnect" in page.content.decode()
    assert Connection.objects.get(pk=connection.pk).refresh_token == "refresh-1"


def test_disconnect_wipes_the_tokens_at_once_and_keeps_mappings_log_and_queued_pushes(admin_client, mocked, site,
                                                                                        connection, make_conversion):
    make_conversion(site)

    response = admin_client.post(reverse("admin:adsync_connection_disconnect", args=[connection.pk]))

    conn = Connection.objects.get(pk=connection.pk)
    assert conn.status == Connection.DISCONNECTED
    assert (conn.access_token, conn.refresh_token, conn.token_expires_at) == ("", "", None)
    assert raw_secrets(conn)[:2] == ("", "")
    assert Push.objects.get().status == Push.QUEUED
    assert conn.goal_mappings.count() == 1
    text = messages_of(response)
    assert "https://account.live.com/consent/Manage" in text and "https://myapps.microsoft.com" in text
    flush_conversions()
    assert len(mocked.calls) == 0
    assert Push.objects.get().status == Push.QUEUED


def test_after_reconnect_the_held_pushes_go_out_on_the_next_flush(admin_client, mocked, site, make_connection,
                                                                  make_conversion, django_capture_on_commit_callbacks):
    conn = make_connection(site, status=Connection.TOKEN_EXPIRED, access_token="dead", refresh_token="dead",
                           last_error="invalid_grant: AADSTS50173: revoked")
    make_conversion(site)
    Push.objects.update(next_attempt_at=timezone.now() + timedelta(minutes=15))  # parked by a failed flush

    with django_capture_on_commit_callbacks(execute=True):
        connect_through_picker(admin_client, mocked, conn, "reconnect")
    mocked.post(GOALS_URL, json={"ConversionGoals": [
        {"Id": "1", "Name": "Purchase", "Status": "Active", "Type": "OfflineConversion"}]})
    run_queued_jobs()  # connection_ready: held rows released, goals fetched, insights queued (and run)
    mocked.post(APPLY_URL, json={"PartialErrors": []}, headers={"TrackingId": "track-1"})
    flush_conversions()

    apply = [c.request for c in mocked.calls if c.request.url == APPLY_URL]
    assert len(apply) == 1 and apply[0].headers["Authorization"] == "Bearer access-new"
    assert Push.objects.get().status == Push.SENT
    conn.refresh_from_db()
    assert (conn.status, conn.last_error) == (Connection.ACTIVE, "")


def test_the_reconnect_action_opens_the_reconnect_flow_for_one_connection(admin_client, connection):
    response = admin_client.post(reverse("admin:adsync_connection_changelist"),
                                 {"action": "reconnect", "_selected_action": [connection.pk]})

    assert response["Location"] == reverse("admin:adsync_connection_reconnect", args=[connection.pk])


def test_refresh_token_now_queues_a_task_that_refreshes_the_connection(admin_client, mocked, connection,
                                                                       django_capture_on_commit_callbacks):
    from django_q.models import OrmQ

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:adsync_connection_changelist"),
                          {"action": "refresh_token_now", "_selected_action": [connection.pk]})
    task = OrmQ.objects.get().task
    assert (task["func"], task["args"]) == ("adsync.jobs.refresh_token_now", (connection.pk,))
    assert len(mocked.calls) == 0  # no HTTP inside the request
    mocked.post(TOKEN_URL, json=token_json("access-2", "refresh-2"))

    assert jobs.refresh_token_now(*task["args"]) == f"connection {connection.pk}: refreshed"
    assert Connection.objects.get(pk=connection.pk).refresh_token == "refresh-2"


def test_a_viewer_sees_the_card_but_cannot_connect_reconnect_or_disconnect(client, site, make_connection):
    from django.contrib.auth.models import Group

    from adsync.security.roles import VIEWERS, ensure_roles

    connection = make_connection(site, client_id="own-app", client_secret="secret-client")
    ensure_roles()
    viewer = get_user_model().objects.create_user("viewer", is_staff=True)
    viewer.groups.add(Group.objects.get(name=VIEWERS))
    client.force_login(viewer)

    page = client.get(card_url(connection)).content.decode()
    assert "Account ID" in page and "/disconnect/" not in page
    assert "secret-client" not in page and "stored (encrypted, never shown)" in page
    for action in ("connect", "reconnect", "disconnect"):
        assert client.get(reverse(f"admin:adsync_connection_{action}", args=[connection.pk])).status_code == 403
    assert client.post(reverse("admin:adsync_connection_disconnect", args=[connection.pk])).status_code == 403
    assert Connection.objects.get(pk=connection.pk).refresh_token == "refresh-1"


# --- The card ----------------------------------------------------------------------------------


def test_the_card_shows_status_account_goal_names_24h_counts_and_the_latest_entry(admin_client, site, connection,
                                                                                  make_conversion):
    make_conversion(site)
    make_conversion(site)
    make_conversion(site, msclkid="")
    Push.objects.filter(msclkid="").update(status=Push.PENDING_IDENTITY)
    first, second = Push.objects.filter(status=Push.QUEUED).order_by("id")
    Push.objects.filter(pk=first.pk).update(status=Push.SENT, sent_at=timezone.now())
    Push.objects.filter(pk=second.pk).update(status=Push.ERROR, error_code=5604,
                                             error_message="The Microsoft Click Id of the offline conversion is invalid.")

    page = admin_client.get(card_url(connection)).content.decode()

    assert "Shop account · Account ID <strong>187654321</strong>" in page
    assert "purchase → “Purchase”" in page
    for status in ("sent", "pending_identity", "error"):
        assert f"connection__id__exact={connection.pk}&amp;status__exact={status}\">1 {status}</a>" in page
    assert "Reconnect" in page and "Disconnect" in page
    assert "Goal list not fetched yet" in page  # a new connection: goals unknown, its insights not stale yet
    assert reverse("admin:adsync_connection_refresh_goals", args=[connection.pk]) in page


def test_a_disconnected_card_offers_connect(admin_client, new_connection):
    page = admin_client.get(card_url(new_connection)).content.decode()

    assert reverse("admin:adsync_connection_connect", args=[new_connection.pk]) in page
    assert "Not connected" in page


def test_active_but_stale_when_the_last_sync_is_older_than_24_hours(admin_client, site, make_connection):
    goals_known = timezone.now() - timedelta(days=2)
    stale = make_connection(site, last_insights_sync_at=timezone.now() - timedelta(hours=25),
                            goals_refreshed_at=goals_known)
    fresh = make_connection(site, last_insights_sync_at=timezone.now() - timedelta(hours=1), goals_refreshed_at=goals_known)

    page = admin_client.get(reverse("admin:adsync_connection_changelist")).content.decode()

    assert page.count("Active but stale") == 1
    assert "Active but stale" in admin_client.get(card_url(stale)).content.decode()
    assert "Active but stale" not in admin_client.get(card_url(fresh)).content.decode()


def test_a_106_is_shown_as_no_access_not_as_token_expired(admin_client, connection):
    health.record_failure(connection, Connection.UPLOAD, MicrosoftAdsError(
        "The user does not represent a authorized developer.", kind=Kind.NO_ACCESS, code=106,
        error_code="UserIsNotAuthorized"))

    page = admin_client.get(reverse("admin:adsync_connection_changelist")).content.decode()

    assert "Failing: no access to this account" in page
    assert "Token expired" not in page.split("<tbody>")[1].split("</tbody>")[0]
    assert Connection.objects.get(pk=connection.pk).status == Connection.ACTIVE


def test_a_106_is_no_longer_a_problem_once_a_push_was_sent_after_it(admin_client, site, connection, make_conversion):
    health.record_failure(connection, Connection.UPLOAD, MicrosoftAdsError(
        "The user does not represent a authorized developer.", kind=Kind.NO_ACCESS, code=106,
        error_code="UserIsNotAuthorized"))
    make_conversion(site)
    Push.objects.update(status=Push.SENT, sent_at=timezone.now() + timedelta(seconds=1))

    page = admin_client.get(card_url(connection)).content.decode()

    assert "Failing: no access to this account" not in page


@pytest.mark.parametrize("answer, problem", [
    ({"status": 503, "body": "Service Unavailable"}, "Token refresh failing (adsync retries)"),
    ({"status": 401, "json": {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret "
                                                                              "provided."}},
     "Failing: Microsoft rejected the app&#x27;s client ID or secret"),
])
def test_a_failing_refresh_shows_on_the_card_without_flipping_the_status(admin_client, mocked, site, make_connection,
                                                                          answer, problem):
    conn = make_connection(site, token_expires_at=timezone.now() - timedelta(minutes=1))
    mocked.post(TOKEN_URL, **answer)
    with pytest.raises(MicrosoftAdsError):
        tokens.access_token_for(conn)

    page = admin_client.get(card_url(conn)).content.decode()

    assert problem in page
    assert Connection.objects.get(pk=conn.pk).status == Connection.ACTIVE


def test_the_card_never_shows_a_token_or_the_client_secret(admin_client, site, make_connection):
    conn = make_connection(site, access_token="secret-access", refresh_token="secret-refresh", client_id="own-app",
                           client_secret="secret-client")

    pages = [admin_client.get(card_url(conn)).content.decode(),
             admin_client.get(reverse("admin:adsync_connection_changelist")).content.decode()]

    for page in pages:
        for secret in ("secret-access", "secret-refresh", "secret-client"):
            assert secret not in page


def _form_data(conn: Connection, **changes) -> dict:
    data = {"site": conn.site_id, "platform": conn.platform, "account_name": conn.account_name,
            "account_id": conn.account_id, "customer_id": conn.customer_id, "account_number": conn.account_number,
            "client_id": conn.client_id, "client_secret": ""}
    return {**data, **changes}


def _connection_form(rf, admin_user, conn: Connection, data: dict):
    request = rf.post("/")
    request.user = admin_user
    form_class = admin.site._registry[Connection].get_form(request, conn)
    return form_class(data=data, instance=conn)


def test_a_blank_client_secret_keeps_the_stored_one_and_a_new_one_replaces_it(rf, admin_user, site, make_connection):
    conn = make_connection(site, client_id="own-app", client_secret="first-secret")

    _connection_form(rf, admin_user, conn, _form_data(conn)).save()
    assert Connection.objects.get(pk=conn.pk).client_secret == "first-secret"

    form = _connection_form(rf, admin_user, Connection.objects.get(pk=conn.pk),
                            _form_data(conn, client_secret="second-secret"))
    form.save()
    assert Connection.objects.get(pk=conn.pk).client_secret == "second-secret"


def test_tokens_are_not_fields_of_the_connection_form(rf, admin_user, connection):
    form = _connection_form(rf, admin_user, connection, _form_data(connection))

    assert "access_token" not in form.fields and "refresh_token" not in form.fields
    assert "first-secret" not in str(form["client_secret"])


def test_the_connection_list_costs_the_same_queries_for_one_or_many_connections(admin_client, make_site,
                                                                                 make_connection, make_conversion):
    url = reverse("admin:adsync_connection_changelist")
    first = make_site()
    make_connection(first)
    make_conversion(first)
    admin_client.get(url)
    with CaptureQueriesContext(db_connection) as one:
        admin_client.get(url)
    for _ in range(4):
        other = make_site()
        make_connection(other, goals={"purchase": "Purchase", "lead": "Lead"})
        make_conversion(other)
    with CaptureQueriesContext(db_connection) as five:
        admin_client.get(url)

    assert len(five) == len(one)


# --- Headless set-up ----------------------------------------------------------------------------


def test_connect_command_validates_by_refreshing_once_and_never_prints_the_token(mocked, site, tmp_path):
    token_file = tmp_path / "token.txt"
    token_file.write_text("existing-refresh-token\n")
    mocked.post(TOKEN_URL, json=token_json("access-2", "rotated-refresh-token"))
    out = StringIO()

    call_command("connect_microsoft_ads", "--site", site.key, "--customer-id", "251234567", "--account-id", STORE,
                 "--refresh-token-file", str(token_file), "--account-name", "Demo Store", stdout=out)

    assert dict(parse_qsl(mocked.calls[0].request.body))["refresh_token"] == "existing-refresh-token"
    conn = Connection.objects.get(site=site)
    assert (conn.status, conn.account_id, conn.customer_id) == (Connection.ACTIVE, STORE, "251234567")
    assert conn.refresh_token == "rotated-refresh-token"
    assert "refresh-token" not in out.getvalue() and "access-2" not in out.getvalue()
    assert "Account ID 187654321" in out.getvalue()


def test_connect_command_with_a_revoked_token_saves_nothing(mocked, site, tmp_path):
    token_file = tmp_path / "token.txt"
    token_file.write_text("revoked-refresh-token")
    mocked.post(TOKEN_URL, **invalid_grant("AADSTS50173: The provided grant has expired due to it being revoked."))

    with pytest.raises(CommandError) as raised:
        call_command("connect_microsoft_ads", "--site", site.key, "--customer-id", "251234567", "--account-id", STORE,
                     "--refresh-token-file", str(token_file))

    assert "AADSTS50173" in str(raised.value) and "revoked-refresh-token" not in str(raised.value)
    assert not Connection.objects.filter(site=site).exists()


def test_connect_command_updates_the_sites_connection_for_that_account(mocked, site, connection, tmp_path):
    token_file = tmp_path / "token.txt"
    token_file.write_text("another-refresh-token")
    Connection.objects.filter(pk=connection.pk).update(status=Connection.TOKEN_EXPIRED)
    mocked.post(TOKEN_URL, json=token_json("access-2", "refresh-2"))

    call_command("connect_microsoft_ads", "--site", site.key, "--customer-id", "251234567", "--account-id", STORE,
                 "--refresh-token-file", str(token_file), stdout=StringIO())

    conn = Connection.objects.get(site=site)
    assert conn.pk == connection.pk
    assert (conn.status, conn.refresh_token, conn.account_name) == (Connection.ACTIVE, "refresh-2", "Shop account")


# --- End to end, against the built-in emulator over real HTTP -------------------------------------


@pytest.fixture
def emulator_urls(settings, live_server):
    """Point every Microsoft URL at the emulator served by live_server, as in `dev.py run`."""
    base = live_server.url
    settings.EMULATOR_ENABLED = True
    settings.ADSYNC_PUBLIC_URL = base
    settings.ADSYNC_CLICK_HOLD_MINUTES = 0
    settings.MICROSOFT_ADS_OAUTH_AUTHORIZE_URL = f"{base}/emulator/oauth2/v2.0/authorize"
    settings.MICROSOFT_ADS_OAUTH_TOKEN_URL = f"{base}/emulator/oauth2/v2.0/token"
    settings.MICROSOFT_ADS_CUSTOMER_API_URL = f"{base}/emulator/clientcenter"
    settings.MICROSOFT_ADS_CAMPAIGN_API_URL = f"{base}/emulator/campaign"
    return base


def consent_in_emulator(client, conn: Connection, action: str, base: str, user_id: str) -> None:
    """Click Connect/Reconnect, accept on the emulator's consent page, come back to the callback."""
    authorize = client.get(reverse(f"admin:adsync_connection_{action}", args=[conn.pk]))["Location"]
    assert "Permissions requested" in requests.get(authorize, timeout=10).text
    params = dict(parse_qsl(urlsplit(authorize).query))
    consent = requests.post(authorize.split("?")[0], data={**params, "user": user_id, "decision": "accept"},
                            allow_redirects=False, timeout=10)
    back = urlsplit(consent.headers["Location"])
    assert f"{back.scheme}://{back.netloc}" == base
    assert client.get(f"{back.path}?{back.query}")["Location"] == pick_url(conn)


@pytest.mark.django_db(transaction=True)
def test_connect_revoke_and_reconnect_against_the_emulator(emulator_urls, admin_client, site, make_conversion):
    from emulator.demo import ensure_demo_data
    from emulator.models import EmulatorAccount, EmulatorBehaviour, EmulatorClick, EmulatorConversion

    demo = ensure_demo_data()
    conn = Connection.objects.create(site=site)
    GoalMapping.objects.create(connection=conn, event_name="purchase", goal_name="Purchase")

    consent_in_emulator(admin_client, conn, "connect", emulator_urls, demo.user.user_id)
    assert "Demo Store" in admin_client.get(pick_url(conn)).content.decode()
    admin_client.post(pick_url(conn), {"account_id": demo.account_id})
    conn.refresh_from_db()
    assert (conn.status, conn.account_id, conn.customer_id) == (Connection.ACTIVE, demo.account_id, demo.customer_id)

    EmulatorBehaviour.objects.filter(pk=EmulatorBehaviour.load().pk).update(refresh_tokens_revoked=True)
    with pytest.raises(MicrosoftAdsError):
        tokens.refresh(conn, stale_access_token=conn.access_token)
    conn.refresh_from_db()
    assert conn.status == Connection.TOKEN_EXPIRED and "AADSTS50173" in conn.last_error

    store = EmulatorAccount.objects.get(account_id=demo.account_id)
    click = EmulatorClick.objects.create(account=store, clicked_at=timezone.now() - timedelta(hours=3))
    make_conversion(site, msclkid=click.msclkid)
    flush_conversions()
    assert Push.objects.get().status == Push.QUEUED

    EmulatorBehaviour.objects.update(refresh_tokens_revoked=False)
    consent_in_emulator(admin_client, conn, "reconnect", emulator_urls, demo.user.user_id)
    admin_client.post(pick_url(conn), {"account_id": demo.account_id})
    flush_conversions()

    assert Connection.objects.get(pk=conn.pk).status == Connection.ACTIVE
    assert Push.objects.get().status == Push.SENT
    assert EmulatorConversion.objects.filter(msclkid=click.msclkid, goal_name="Purchase").exists()
