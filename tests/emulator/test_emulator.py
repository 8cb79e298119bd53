"""The Microsoft Ads emulator: Microsoft's rules and shapes, through Django's test client and
through adsync's real Microsoft client code over HTTP (pytest-django's live_server).

The fixtures live here rather than in conftest.py, which belongs to the rest of the suite.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import io
import re
import zipfile
from datetime import date, timedelta
from datetime import timezone as dt_timezone
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.conf import settings as django_settings
from django.utils import timezone

from adsync.microsoft import oauth
from adsync.microsoft.campaign import CampaignClient
from adsync.microsoft.customer import CustomerClient
from adsync.microsoft.errors import Kind, MicrosoftAdsError
from adsync.microsoft.reporting import ReportingClient
from emulator import behaviour as behaviour_module
from emulator.demo import ACCOUNT_ID, CUSTOMER_ID, SECOND_ACCOUNT_ID, ensure_demo_data
from emulator.models import (
    EmulatorAccount,
    EmulatorApp,
    EmulatorBehaviour,
    EmulatorCampaign,
    EmulatorClick,
    EmulatorConversion,
    EmulatorGoal,
    EmulatorToken,
    EmulatorUser,
    adsync_callback_uri,
)
from tests.emulator.support import access_token_for

pytestmark = pytest.mark.django_db

APPLY = "/emulator/campaign/CampaignManagement/v13/OfflineConversions/Apply"
GOALS = "/emulator/campaign/CampaignManagement/v13/ConversionGoals/QueryByIds"
GET_USER = "/emulator/clientcenter/CustomerManagement/v13/User/Query"
SEARCH_ACCOUNTS = "/emulator/clientcenter/CustomerManagement/v13/Accounts/Search"
SUBMIT = "/emulator/reporting/Reporting/v13/GenerateReport/Submit"
POLL = "/emulator/reporting/Reporting/v13/GenerateReport/Poll"
AUTHORIZE = "/emulator/oauth2/v2.0/authorize"
TOKEN = "/emulator/oauth2/v2.0/token"
SCOPE = "https://ads.microsoft.com/msads.manage offline_access"
REDIRECT_URI = adsync_callback_uri()  # registered for the settings' app (tests/emulator/test_oauth.py)


# --- Fixtures and helpers --------------------------------------------------------------------

@pytest.fixture
def switches() -> EmulatorBehaviour:
    return EmulatorBehaviour.load()


def headers(token: str, customer_id: str | None = CUSTOMER_ID, account_id: str | None = ACCOUNT_ID,
            developer_token: str | None = None) -> dict:
    """The four Campaign Management headers (docs/microsoft-api.md#request-headers), as test-client keyword arguments."""
    values = {"Authorization": f"Bearer {token}",
              "DeveloperToken": developer_token or django_settings.MICROSOFT_ADS_DEVELOPER_TOKEN,
              "CustomerId": customer_id, "CustomerAccountId": account_id}
    return {"headers": {k: v for k, v in values.items() if v is not None}}


def post(client, path: str, body, token: str, **kwargs):
    return client.post(path, body, content_type="application/json", **headers(token, **kwargs))


def new_click(age: timedelta = timedelta(hours=2), account_id: str = ACCOUNT_ID) -> EmulatorClick:
    account = EmulatorAccount.objects.get(account_id=account_id)
    return EmulatorClick.objects.create(account=account, clicked_at=timezone.now() - age)


def iso(moment) -> str:
    return moment.astimezone(dt_timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def conversion(click: EmulatorClick | None, name: str = "Purchase", age: timedelta = timedelta(hours=1),
               **extra) -> dict:
    item = {"ConversionName": name, "ConversionTime": iso(timezone.now() - age), "ConversionValue": 10.5,
            "ConversionCurrencyCode": "USD"}
    if click:
        item["MicrosoftClickId"] = click.msclkid
    return {**item, **extra}


def apply(client, token: str, items: list, **kwargs):
    return post(client, APPLY, {"OfflineConversions": items}, token, **kwargs)


def error_codes(response) -> dict[int, int]:
    """PartialErrors as {Index: Code}."""
    return {e["Index"]: e["Code"] for e in response.json()["PartialErrors"]}


def fault_code(response) -> int:
    body = response.json()
    errors = body.get("Errors") or body.get("OperationErrors")
    return errors[0]["Code"]


# --- ApplyOfflineConversions: accepted conversions ------------------------------------------

def test_it_accepts_a_conversion_for_a_registered_click_and_records_it(client, token):
    click = new_click()

    response = apply(client, token, [conversion(click)])

    assert response.status_code == 200
    assert response.json() == {"PartialErrors": []}
    recorded = EmulatorConversion.objects.get()
    assert (recorded.goal_name, recorded.msclkid, recorded.duplicate) == ("Purchase", click.msclkid, False)
    assert recorded.tracking_id == response["TrackingId"]


def test_every_answer_carries_a_tracking_id_header(client, token):
    ok = apply(client, token, [conversion(new_click())])
    fault = apply(client, "unknown-token", [conversion(new_click())])

    assert re.fullmatch(r"[0-9a-f-]{36}", ok["TrackingId"])
    assert fault["TrackingId"] == fault.json()["TrackingId"]


def test_a_repeat_of_the_same_goal_click_and_time_is_accepted_silently_but_not_counted_twice(client, token):
    item = conversion(new_click())

    first = apply(client, token, [item])
    second = apply(client, token, [item, item])

    assert first.json() == second.json() == {"PartialErrors": []}
    assert list(EmulatorConversion.objects.order_by("id").values_list("duplicate", flat=True)) == [False, True, True]


def test_the_same_click_may_convert_again_at_another_time(client, token):
    click = new_click()

    apply(client, token, [conversion(click, age=timedelta(minutes=30)), conversion(click, age=timedelta(minutes=20))])

    assert EmulatorConversion.objects.filter(duplicate=False).count() == 2


def test_a_paused_offline_goal_still_accepts_conversions(client, token):
    assert error_codes(apply(client, token, [conversion(new_click(), name="Old Goal")])) == {}


# --- ApplyOfflineConversions: per-item errors ------------------------------------------------

def test_goal_names_must_match_exactly_including_case_and_spaces(client, token):
    click = new_click()

    response = apply(client, token, [conversion(click, name="purchase "), conversion(click, name="Purchase")])

    error = response.json()["PartialErrors"][0]
    assert response.status_code == 200
    assert (error["Index"], error["Code"], error["ErrorCode"]) == (0, 5606, "OfflineConversionNameInvalid")
    assert error["Message"] == "The conversion name do not match an existing offline conversion goal."
    assert error["Type"] == "BatchError"
    assert EmulatorConversion.objects.get().goal_name == "Purchase"


def test_partial_errors_are_not_in_request_order_so_clients_must_map_them_by_index(client, token):
    click = new_click()
    items = [conversion(click, name="Nope"), conversion(click, age=timedelta(minutes=5)),
             conversion(None, MicrosoftClickId="test_msclkid_123")]

    errors = apply(client, token, items).json()["PartialErrors"]

    assert [e["Index"] for e in errors] == [2, 0]
    assert [e["Code"] for e in errors] == [5604, 5606]


def test_the_test_click_id_is_always_invalid(client, token):
    response = apply(client, token, [conversion(None, MicrosoftClickId="test_msclkid_123")])

    error = response.json()["PartialErrors"][0]
    assert (error["Code"], error["Message"]) == (5604, "The Microsoft Click Id of the offline conversion is invalid.")


def test_a_click_from_another_account_is_invalid_here(client, token):
    other_click = new_click(account_id=SECOND_ACCOUNT_ID)

    assert error_codes(apply(client, token, [conversion(other_click)])) == {0: 5604}


@pytest.mark.parametrize(("change", "code"), [
    ({"ConversionName": ""}, 5605),
    ({"ConversionTime": None}, 5608),
    ({"MicrosoftClickId": None}, 5603),
    ({"ConversionTime": "FUTURE"}, 5614),
    ({"ConversionTime": "91_DAYS_AGO"}, 5609),
    ({"ConversionTime": "BEFORE_CLICK"}, 5616),
    ({"ConversionValue": -1}, 5610),
    ({"ConversionCurrencyCode": "XYZ"}, 5611),
    ({"HashedEmailAddress": "someone@example.com"}, 8004),
])
def test_each_microsoft_rule_rejects_only_the_offending_item(client, token, change, code):
    click = new_click(age=timedelta(days=1))
    times = {"FUTURE": iso(timezone.now() + timedelta(minutes=10)),
             "91_DAYS_AGO": iso(timezone.now() - timedelta(days=91)),
             "BEFORE_CLICK": iso(click.clicked_at - timedelta(minutes=1))}
    bad = conversion(click, **change)
    bad["ConversionTime"] = times.get(bad["ConversionTime"], bad["ConversionTime"])

    response = apply(client, token, [conversion(click), bad])

    assert error_codes(response) == {1: code}
    assert EmulatorConversion.objects.count() == 1


def test_a_conversion_after_the_goal_window_is_rejected_with_5617(client, token):
    EmulatorGoal.objects.filter(name="Purchase").update(conversion_window_in_minutes=60)
    click = new_click(age=timedelta(hours=3))

    assert error_codes(apply(client, token, [conversion(click, age=timedelta(hours=1))])) == {0: 5617}


def test_a_small_clock_skew_is_not_a_future_conversion(client, token):
    item = conversion(new_click(), ConversionTime=iso(timezone.now() + timedelta(seconds=30)))

    assert error_codes(apply(client, token, [item])) == {}


def test_a_goal_of_another_type_is_not_an_offline_goal(client, token, demo):
    account = EmulatorAccount.objects.get(account_id=ACCOUNT_ID)
    EmulatorGoal.objects.create(account=account, name="Thank you page", type="Url")

    assert error_codes(apply(client, token, [conversion(new_click(), name="Thank you page")])) == {0: 5606}


def test_hashed_identity_without_a_click_needs_a_goal_with_enhanced_conversions(client, token):
    email = hashlib.sha256(b"someone@example.com").hexdigest()
    items = [conversion(None, name="Purchase", HashedEmailAddress=email),
             conversion(None, name="Signup", HashedEmailAddress=email)]

    assert error_codes(apply(client, token, items)) == {1: 5603}


def test_the_two_hour_goal_age_rule_applies_only_when_switched_on(client, token, switches):
    account = EmulatorAccount.objects.get(account_id=ACCOUNT_ID)
    EmulatorGoal.objects.create(account=account, name="Brand new")
    item = conversion(new_click(), name="Brand new")

    assert error_codes(apply(client, token, [item])) == {}
    EmulatorBehaviour.objects.filter(pk=switches.pk).update(enforce_goal_minimum_age=True)
    assert error_codes(apply(client, token, [conversion(new_click(), name="Brand new")])) == {0: 5615}
    assert error_codes(apply(client, token, [conversion(new_click(), name="Purchase")])) == {}


# --- ApplyOfflineConversions: whole-request faults -------------------------------------------

def test_more_than_1000_conversions_fail_the_whole_request_with_5601(client, token):
    click = new_click()

    response = apply(client, token, [conversion(click, age=timedelta(seconds=s + 1)) for s in range(1001)])

    body = response.json()
    assert response.status_code == 400
    assert body["Type"] == "ApiFaultDetail"
    assert body["OperationErrors"][0]["Code"] == 5601
    assert body["OperationErrors"][0]["ErrorCode"] == "OfflineConversionsLimitExceeded"
    assert EmulatorConversion.objects.count() == 0


def test_an_empty_list_is_5600(client, token):
    response = apply(client, token, [])

    assert (response.status_code, fault_code(response)) == (400, 5600)


def test_one_unparseable_conversion_time_fails_the_whole_request_and_applies_nothing(client, token):
    click = new_click()
    items = [conversion(click), conversion(click, ConversionTime="12017-11-13T07:22:35")]

    response = apply(client, token, items)

    body = response.json()
    assert response.status_code == 400
    assert "PartialErrors" not in body and "Index" not in body["Errors"][0]
    assert "cannot be parsed as the type 'DateTime'" in body["Errors"][0]["Detail"]
    assert EmulatorConversion.objects.count() == 0


# --- Headers and credentials ----------------------------------------------------------------

def test_an_unknown_access_token_is_105_invalid_credentials(client, demo):
    response = apply(client, "not-a-token", [conversion(new_click())])

    body = response.json()
    assert response.status_code == 401
    assert body["Type"] == "AdApiFaultDetail"
    assert body["Errors"][0]["Code"] == 105 and body["Errors"][0]["ErrorCode"] == "InvalidCredentials"


def test_an_expired_access_token_is_109(client, token):
    EmulatorToken.objects.filter(value=token).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = apply(client, token, [conversion(new_click())])

    assert (response.status_code, fault_code(response)) == (401, 109)


def test_the_developer_token_must_be_ours_or_the_sandbox_one(client, token):
    item = conversion(new_click())

    assert fault_code(apply(client, token, [item], developer_token="someone-elses")) == 105
    assert apply(client, token, [item], developer_token="BBD37VB98").status_code == 200


@pytest.mark.parametrize(("header_values", "code"), [
    ({"customer_id": None}, 1029),
    ({"account_id": None}, 1030),
    ({"account_id": "999999999"}, 106),
])
def test_missing_or_unreachable_account_headers_fail_the_call(client, token, header_values, code):
    response = apply(client, token, [conversion(new_click())], **header_values)

    assert fault_code(response) == code


def test_a_viewer_cannot_upload_conversions(client, demo):
    viewer = EmulatorUser.objects.get(user_name="demo.viewer")

    response = apply(client, access_token_for(viewer), [conversion(new_click(account_id=SECOND_ACCOUNT_ID))],
                     account_id=SECOND_ACCOUNT_ID)

    assert (response.status_code, fault_code(response)) == (403, 106)


def test_the_emulator_is_not_there_outside_emulator_mode(client, token, settings):
    settings.MICROSOFT_ADS_ENVIRONMENT = "production"

    assert apply(client, token, [conversion(new_click())]).status_code == 404
    assert client.get("/emulator/click/").status_code == 404


# --- Failure injection ----------------------------------------------------------------------

def arm(apply_failure: str, count: int = 1, **extra) -> None:
    EmulatorBehaviour.load()
    EmulatorBehaviour.objects.filter(pk=1).update(apply_failure=apply_failure, apply_failure_count=count, **extra)


def test_an_injected_500_fails_the_next_call_only(client, token):
    arm(EmulatorBehaviour.FAIL_500)
    item = conversion(new_click())

    failed = apply(client, token, [item])
    retried = apply(client, token, [item])

    assert (failed.status_code, fault_code(failed)) == (500, 0)
    assert retried.status_code == 200
    assert EmulatorConversion.objects.count() == 1


def test_an_injected_throttle_is_429_with_code_117_and_retry_after(client, token):
    arm(EmulatorBehaviour.FAIL_THROTTLE, count=2, retry_after_seconds=90)

    response = apply(client, token, [conversion(new_click())])

    assert (response.status_code, fault_code(response), response["Retry-After"]) == (429, 117, "90")
    assert EmulatorBehaviour.load().apply_failure_count == 1


def test_an_injected_time_out_sleeps_then_applies_so_a_retry_must_be_deduplicated(client, token, monkeypatch):
    slept = []
    monkeypatch.setattr(behaviour_module, "sleep", slept.append)
    arm(EmulatorBehaviour.FAIL_TIMEOUT, timeout_seconds=42)
    item = conversion(new_click())

    apply(client, token, [item])
    apply(client, token, [item])

    assert slept == [42]
    assert list(EmulatorConversion.objects.order_by("id").values_list("duplicate", flat=True)) == [False, True]


# --- GetConversionGoalsByIds ----------------------------------------------------------------

def test_goals_query_returns_the_accounts_offline_goals_with_string_ids(client, token):
    account = EmulatorAccount.objects.get(account_id=ACCOUNT_ID)
    EmulatorGoal.objects.create(account=account, name="Thank you page", type="Url")
    body = {"ConversionGoalIds": None, "ConversionGoalTypes": "OfflineConversion",
            "ReturnAdditionalFields": "IsExternallyAttributed,IsEnhancedConversionsEnabled"}

    goals = post(client, GOALS, body, token).json()["ConversionGoals"]

    by_name = {goal["Name"]: goal for goal in goals}
    assert set(by_name) == {"Purchase", "Lead", "Signup", "Old Goal"}
    assert by_name["Old Goal"]["Status"] == "Paused"
    assert by_name["Purchase"]["IsEnhancedConversionsEnabled"] is True
    assert all(isinstance(goal["Id"], str) and goal["Type"] == "OfflineConversion" for goal in goals)


def test_goals_queried_by_id_keep_their_slot_and_unknown_ids_are_null(client, token):
    purchase = EmulatorGoal.objects.get(account__account_id=ACCOUNT_ID, name="Purchase")
    body = {"ConversionGoalIds": ["1", purchase.goal_id], "ConversionGoalTypes": "OfflineConversion"}

    goals = post(client, GOALS, body, token).json()["ConversionGoals"]

    assert goals[0] is None and goals[1]["Name"] == "Purchase"
    assert goals[1]["IsEnhancedConversionsEnabled"] is None  # not asked for


# --- Customer Management ----------------------------------------------------------------------

def test_get_user_returns_the_user_and_their_roles(client, token):
    response = post(client, GET_USER, {"UserId": None}, token, customer_id=None, account_id=None)

    body = response.json()
    assert body["User"]["UserName"] == "demo.admin"
    assert body["CustomerRoles"] == [{"CustomerId": CUSTOMER_ID, "AccountIds": None, "LinkedAccountIds": None,
                                      "RoleId": 41, "CustomerLinkPermission": None}]


def test_a_viewer_role_lists_the_accounts_it_reaches(client, demo):
    viewer = EmulatorUser.objects.get(user_name="demo.viewer")

    roles = post(client, GET_USER, {"UserId": None}, access_token_for(viewer)).json()["CustomerRoles"]

    assert [(r["RoleId"], r["AccountIds"]) for r in roles] == [(100, [SECOND_ACCOUNT_ID])]


def test_search_accounts_pages_through_the_users_accounts(client, token, demo):
    def page(index: int) -> list[str]:
        body = {"Predicates": [{"Field": "UserId", "Operator": "Equals", "Value": demo.user.user_id}],
                "Ordering": [{"Field": "Name", "Order": "Ascending"}], "PageInfo": {"Index": index, "Size": 1}}
        return [a["Name"] for a in post(client, SEARCH_ACCOUNTS, body, token).json()["Accounts"]]

    assert [page(0), page(1), page(2)] == [["Demo Agency Client"], ["Demo Store"], []]


def test_customer_management_faults_have_no_error_code(client, demo):
    response = post(client, GET_USER, {"UserId": None}, "bad-token")

    body = response.json()
    assert response.status_code == 401
    assert body["Type"] == "ApiFault"
    assert body["OperationErrors"][0]["Code"] == 105 and "ErrorCode" not in body["OperationErrors"][0]


# --- Reporting --------------------------------------------------------------------------------

def report_request(**overrides) -> dict:
    start, end = date.today() - timedelta(days=3), date.today() - timedelta(days=1)
    request = {
        "Type": "CampaignPerformanceReportRequest", "Format": "Csv", "FormatVersion": "2.0",
        "ReportName": "adsync daily", "Aggregation": "Daily",
        "Columns": ["TimePeriod", "AccountId", "CampaignId", "CampaignName", "Impressions", "Clicks", "Spend"],
        "Scope": {"AccountIds": [ACCOUNT_ID]},
        "Time": {"CustomDateRangeStart": {"Day": start.day, "Month": start.month, "Year": start.year},
                 "CustomDateRangeEnd": {"Day": end.day, "Month": end.month, "Year": end.year},
                 "ReportTimeZone": "GreenwichMeanTimeDublinEdinburghLisbonLondon"},
    }
    return {**request, **overrides}


def submit_and_poll(client, token, request: dict, polls: int = 2) -> dict:
    report_id = post(client, SUBMIT, {"ReportRequest": request}, token).json()["ReportRequestId"]
    statuses = [post(client, POLL, {"ReportRequestId": report_id}, token).json() for _ in range(polls)]
    return statuses[-1]["ReportRequestStatus"] | {"first": statuses[0]["ReportRequestStatus"]["Status"]}


def report_text(client, url: str) -> str:
    response = client.get(url)
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        (name,) = archive.namelist()
        return archive.read(name).decode("utf-8-sig")


def test_a_report_is_pending_then_downloads_as_a_zipped_csv_in_microsofts_layout(client, token):
    status = submit_and_poll(client, token, report_request())

    text = report_text(client, status["ReportDownloadUrl"])
    lines = text.split("\r\n")
    assert (status["first"], status["Status"]) == ("Pending", "Success")
    assert lines[0] == '"Report Name: adsync daily"'
    assert '"Rows: 6"' in lines and lines[lines.index('"Rows: 6"') + 1] == ""
    assert lines[10].startswith('"TimePeriod","AccountId","CampaignId"')
    assert len(lines[11:17]) == 6 and all(line.startswith('"20') for line in lines[11:17])
    assert "Microsoft Corporation. All rights reserved." in lines[-2]


def test_report_numbers_are_deterministic_and_header_and_footer_can_be_excluded(client, token):
    request = report_request(ExcludeReportHeader=True, ExcludeReportFooter=True)

    first = report_text(client, submit_and_poll(client, token, request)["ReportDownloadUrl"])
    second = report_text(client, submit_and_poll(client, token, request)["ReportDownloadUrl"])

    assert first == second
    assert first.startswith('"TimePeriod"') and first.count("\r\n") == 7


def test_a_report_with_no_data_succeeds_with_a_null_url(client, token):
    EmulatorCampaign.objects.all().delete()

    status = submit_and_poll(client, token, report_request())

    assert (status["Status"], status["ReportDownloadUrl"]) == ("Success", None)


def test_report_failures_can_be_injected(client, token):
    EmulatorBehaviour.load()
    EmulatorBehaviour.objects.filter(pk=1).update(report_concurrency_failure_count=1, report_failure=True)

    refused = post(client, SUBMIT, {"ReportRequest": report_request()}, token)
    status = submit_and_poll(client, token, report_request(), polls=1)

    assert fault_code(refused) == 207
    assert status["Status"] == "Error"


def test_polling_an_unknown_report_is_2101(client, token):
    assert fault_code(post(client, POLL, {"ReportRequestId": "123"}, token)) == 2101


def test_a_download_url_with_a_bad_signature_is_refused(client, token):
    url = submit_and_poll(client, token, report_request())["ReportDownloadUrl"]

    assert client.get(url.replace("sig=", "sig=x")).status_code == 403


# --- OAuth: consent page ----------------------------------------------------------------------

def authorize_params(**overrides) -> dict:
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    params = {"response_type": "code", "client_id": django_settings.MICROSOFT_ADS_CLIENT_ID,
              "redirect_uri": REDIRECT_URI, "scope": SCOPE, "state": "xyz", "prompt": "select_account",
              "code_challenge": challenge, "code_challenge_method": "S256"}
    return {**params, **overrides}


def consent(client, decision: str = "accept", **overrides) -> dict:
    """Accept or cancel on the consent page; returns the query the app's redirect URI receives."""
    demo_user = EmulatorUser.objects.get(user_name="demo.admin")
    response = client.post(AUTHORIZE, {**authorize_params(**overrides), "user": demo_user.user_id,
                                       "decision": decision})
    assert response.status_code == 302
    return {k: v[0] for k, v in parse_qs(urlsplit(response["Location"]).query).items()}


def test_the_consent_page_shows_the_app_the_scopes_and_the_users(client, demo):
    page = client.get(AUTHORIZE, authorize_params()).content.decode()

    for text in [django_settings.MICROSOFT_ADS_CLIENT_ID, "msads.manage", "demo.admin", "demo.viewer",
                 "Accept", "Cancel"]:
        assert text in page


def test_accept_redirects_with_a_code_and_the_state(client, demo):
    answer = consent(client)

    assert answer["state"] == "xyz"
    assert EmulatorToken.objects.get(value=answer["code"]).kind == EmulatorToken.CODE


def test_cancel_redirects_with_access_denied_and_the_state(client, demo):
    answer = consent(client, decision="cancel")

    assert (answer["error"], answer["state"]) == ("access_denied", "xyz")
    assert answer["error_description"].startswith("AADSTS65004")


def test_the_redirect_keeps_the_apps_own_query(client, demo):
    EmulatorApp.objects.create(client_id="own-app", client_secret="s", redirect_uris=REDIRECT_URI + "?connection=7")
    answer = consent(client, client_id="own-app", redirect_uri=REDIRECT_URI + "?connection=7")

    assert answer["connection"] == "7" and "code" in answer


def test_an_unknown_client_gets_an_error_page_not_a_redirect(client, demo):
    response = client.get(AUTHORIZE, authorize_params(client_id="who-knows"))

    assert response.status_code == 400
    assert b"AADSTS700016" in response.content


# --- OAuth: token endpoint --------------------------------------------------------------------

def token_call(client, **params):
    base = {"client_id": django_settings.MICROSOFT_ADS_CLIENT_ID,
            "client_secret": django_settings.MICROSOFT_ADS_CLIENT_SECRET}
    return client.post(TOKEN, {**base, **params})


def redeem(client, code: str, **params):
    defaults = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                "code_verifier": "v" * 50}
    return token_call(client, **{**defaults, **params})


def test_a_code_is_exchanged_once_for_microsoft_shaped_tokens(client, demo):
    code = consent(client)["code"]

    first = redeem(client, code)
    again = redeem(client, code)

    body = first.json()
    assert set(body) == {"token_type", "scope", "expires_in", "ext_expires_in", "access_token", "refresh_token"}
    assert (body["token_type"], body["expires_in"], body["scope"]) == (
        "Bearer", 3600, "https://ads.microsoft.com/msads.manage")
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(("params", "aadsts"), [
    ({"code_verifier": "w" * 50}, 501481),
    ({"code_verifier": ""}, 501481),
])
def test_a_pkce_or_redirect_uri_mismatch_is_invalid_grant(client, demo, params, aadsts):
    response = redeem(client, consent(client)["code"], **params)

    body = response.json()
    assert (response.status_code, body["error"], body["error_codes"]) == (400, "invalid_grant", [aadsts])
    assert body["error_description"].startswith(f"AADSTS{aadsts}: ")


def test_a_code_older_than_five_minutes_is_invalid_grant(client, demo):
    code = consent(client)["code"]
    EmulatorToken.objects.filter(value=code).update(expires_at=timezone.now())

    assert redeem(client, code).json()["error_codes"] == [70008]


def test_a_wrong_client_secret_is_invalid_client(client, demo):
    response = redeem(client, consent(client)["code"], client_secret="nope")

    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")


def test_a_connections_own_app_is_accepted_when_registered(client, demo):
    EmulatorApp.objects.create(client_id="own-app", client_secret="own-secret")
    code = consent(client, client_id="own-app")["code"]

    response = redeem(client, code, client_id="own-app", client_secret="own-secret")

    assert response.status_code == 200


def test_refresh_rotates_and_a_spent_refresh_token_is_refused(client, demo):
    first = token_call(client, grant_type="refresh_token", refresh_token=demo.refresh_token, scope=SCOPE)
    replay = token_call(client, grant_type="refresh_token", refresh_token=demo.refresh_token, scope=SCOPE)

    assert first.status_code == 200 and first.json()["refresh_token"] != demo.refresh_token
    assert replay.json()["error"] == "invalid_grant"


def test_revoked_refresh_tokens_get_invalid_grant(client, demo, switches):
    EmulatorBehaviour.objects.filter(pk=switches.pk).update(refresh_tokens_revoked=True)

    response = token_call(client, grant_type="refresh_token", refresh_token=demo.refresh_token)

    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


def test_without_offline_access_there_is_no_refresh_token(client, demo):
    code = consent(client, scope="https://ads.microsoft.com/msads.manage")["code"]

    assert "refresh_token" not in redeem(client, code).json()


def test_token_endpoint_outages_can_be_injected(client, demo):
    EmulatorBehaviour.load()
    EmulatorBehaviour.objects.filter(pk=1).update(token_failure_count=1)

    failed = token_call(client, grant_type="refresh_token", refresh_token=demo.refresh_token)
    ok = token_call(client, grant_type="refresh_token", refresh_token=demo.refresh_token)

    assert (failed.status_code, ok.status_code) == (503, 200)


# --- Click, status page, demo data ------------------------------------------------------------

def test_a_simulated_click_registers_an_msclkid_and_lands_with_it_before_the_fragment(client, demo):
    response = client.get("/emulator/click/", {"next": "/demo/?utm_source=bing#buy"})

    location = response["Location"]
    msclkid = re.search(r"msclkid=([0-9a-f]{32})#buy$", location).group(1)
    assert location.startswith("/demo/?utm_source=bing&msclkid=")
    assert EmulatorClick.objects.get(msclkid=msclkid).account.account_id == ACCOUNT_ID


def test_a_simulated_click_never_redirects_off_site(client, demo):
    response = client.get("/emulator/click/", {"next": "https://evil.example/"})

    assert response["Location"].startswith("/demo/?msclkid=")


def test_the_status_page_is_for_staff_and_shows_goals_and_received_conversions(client, token, admin_user):
    apply(client, token, [conversion(new_click())])

    anonymous = client.get("/emulator/")
    client.force_login(admin_user)
    page = client.get("/emulator/").content.decode()

    assert anonymous.status_code == 302
    assert "Old Goal" in page and "Purchase" in page and EmulatorConversion.objects.get().tracking_id in page


def test_demo_data_is_idempotent_and_keeps_handing_out_the_unspent_refresh_token(demo):
    again = ensure_demo_data()

    assert again.refresh_token == demo.refresh_token
    assert (EmulatorAccount.objects.count(), EmulatorGoal.objects.count(), EmulatorUser.objects.count()) == (2, 5, 2)
    assert list(EmulatorUser.objects.get(user_name="demo.viewer").accounts.values_list("account_id", flat=True)) == [
        SECOND_ACCOUNT_ID]


def test_the_emulator_models_are_in_the_admin(admin_client, demo):
    for model in ["emulatorgoal", "emulatorclick", "emulatoraccount", "emulatoruser", "emulatortoken",
                  "emulatorconversion", "emulatorcampaign", "emulatorapp", "emulatorreportrequest"]:
        assert admin_client.get(f"/admin/emulator/{model}/").status_code == 200
    assert admin_client.get("/admin/emulator/emulatorbehaviour/", follow=True).status_code == 200


# --- Through adsync's real client code, over HTTP ---------------------------------------------

@pytest.fixture
def live(live_server, settings, demo):
    """Point adsync's Microsoft settings at the emulator served by a real HTTP server."""
    base = live_server.url + "/emulator"
    settings.MICROSOFT_ADS_CAMPAIGN_API_URL = base + "/campaign"
    settings.MICROSOFT_ADS_CUSTOMER_API_URL = base + "/clientcenter"
    settings.MICROSOFT_ADS_REPORTING_API_URL = base + "/reporting"
    settings.MICROSOFT_ADS_OAUTH_AUTHORIZE_URL = base + "/oauth2/v2.0/authorize"
    settings.MICROSOFT_ADS_OAUTH_TOKEN_URL = base + "/oauth2/v2.0/token"
    settings.MICROSOFT_ADS_TIMEOUT = 10
    yield live_server
    # Client sessions left for the cyclic GC keep server threads alive; if those end after the
    # session-wide live server stops sharing the in-memory SQLite connection, they raise.
    gc.collect()


def campaign_client(token: str) -> CampaignClient:
    return CampaignClient(access_token=token, customer_id=CUSTOMER_ID, account_id=ACCOUNT_ID)


def test_campaign_client_maps_partial_errors_by_index_over_http(live, token):
    click = new_click()
    items = [conversion(click), conversion(click, name="purchase "),
             conversion(None, MicrosoftClickId="test_msclkid_123")]

    result = campaign_client(token).apply_offline_conversions(items)

    assert {i: e.code for i, e in result.errors_by_index.items()} == {1: 5606, 2: 5604}
    assert result.errors_by_index[1].message == "The conversion name do not match an existing offline conversion goal."
    assert result.tracking_id == EmulatorConversion.objects.get().tracking_id


def test_campaign_client_gets_5601_as_a_whole_request_error_over_http(live, token):
    click = new_click()

    with pytest.raises(MicrosoftAdsError) as caught:
        campaign_client(token).apply_offline_conversions([conversion(click)] * 1001)

    assert (caught.value.code, caught.value.http_status, caught.value.kind) == (5601, 400, Kind.REVIEW)


def test_campaign_client_sees_throttling_and_expired_tokens_over_http(live, token):
    arm(EmulatorBehaviour.FAIL_THROTTLE, retry_after_seconds=120)
    with pytest.raises(MicrosoftAdsError) as throttled:
        campaign_client(token).apply_offline_conversions([conversion(new_click())])
    EmulatorToken.objects.filter(value=token).update(expires_at=timezone.now())
    with pytest.raises(MicrosoftAdsError) as expired:
        campaign_client(token).apply_offline_conversions([conversion(new_click())])

    assert (throttled.value.kind, throttled.value.retry_after) == (Kind.THROTTLED, 120.0)
    assert (expired.value.code, expired.value.kind) == (109, Kind.AUTH)


def test_campaign_client_reads_the_goals_over_http(live, token):
    names = {goal["Name"] for goal in campaign_client(token).get_offline_conversion_goals()}

    assert names == {"Purchase", "Lead", "Signup", "Old Goal"}


def test_oauth_refresh_rotates_over_http_and_a_replayed_token_means_reconnect(live, demo):
    client_id, secret = django_settings.MICROSOFT_ADS_CLIENT_ID, django_settings.MICROSOFT_ADS_CLIENT_SECRET

    first = oauth.refresh(client_id, secret, demo.refresh_token)
    second = oauth.refresh(client_id, secret, first.refresh_token)
    with pytest.raises(MicrosoftAdsError) as replayed:
        oauth.refresh(client_id, secret, first.refresh_token)

    assert len({demo.refresh_token, first.refresh_token, second.refresh_token}) == 3
    assert campaign_client(second.access_token).get_offline_conversion_goals()
    assert (replayed.value.kind, replayed.value.error_code) == (Kind.RECONNECT, "invalid_grant")


def test_oauth_refresh_over_http_after_revocation_means_reconnect_and_an_outage_is_transient(live, demo):
    client_id, secret = django_settings.MICROSOFT_ADS_CLIENT_ID, django_settings.MICROSOFT_ADS_CLIENT_SECRET
    EmulatorBehaviour.load()
    EmulatorBehaviour.objects.filter(pk=1).update(token_failure_count=1)
    with pytest.raises(MicrosoftAdsError) as outage:
        oauth.refresh(client_id, secret, demo.refresh_token)
    EmulatorBehaviour.objects.filter(pk=1).update(refresh_tokens_revoked=True)
    with pytest.raises(MicrosoftAdsError) as revoked:
        oauth.refresh(client_id, secret, demo.refresh_token)

    assert outage.value.kind == Kind.TRANSIENT
    assert revoked.value.kind == Kind.RECONNECT and "AADSTS50173" in revoked.value.message


def test_the_whole_consent_flow_works_with_adsyncs_oauth_code_over_http(live, demo, settings):
    settings.ADSYNC_PUBLIC_URL = live.url
    redirect_uri = live.url + "/adsync/oauth/microsoft/callback/"
    verifier = oauth.new_code_verifier()
    url = oauth.authorization_url(django_settings.MICROSOFT_ADS_CLIENT_ID, redirect_uri, "st4te", verifier,
                                  "select_account")
    form = dict(parse_qs(urlsplit(url).query, keep_blank_values=True))

    accepted = requests.post(url.split("?")[0], data={**{k: v[0] for k, v in form.items()}, "decision": "accept",
                                                      "user": demo.user.user_id}, allow_redirects=False, timeout=10)
    answer = parse_qs(urlsplit(accepted.headers["Location"]).query)
    tokens_ = oauth.exchange_code(django_settings.MICROSOFT_ADS_CLIENT_ID, django_settings.MICROSOFT_ADS_CLIENT_SECRET,
                                  answer["code"][0], redirect_uri, verifier)

    assert answer["state"] == ["st4te"]
    assert tokens_.refresh_token and campaign_client(tokens_.access_token).get_offline_conversion_goals()


def test_customer_client_lists_reachable_accounts_with_roles_over_http(live, demo):
    viewer = EmulatorUser.objects.get(user_name="demo.viewer")

    admin_accounts = CustomerClient(access_token=access_token_for(demo.user)).reachable_accounts()
    viewer_accounts = CustomerClient(access_token=access_token_for(viewer)).reachable_accounts()

    assert [(a.name, a.role_ids) for a in admin_accounts] == [("Demo Agency Client", (41,)), ("Demo Store", (41,))]
    assert [(a.id, a.viewer_only) for a in viewer_accounts] == [(SECOND_ACCOUNT_ID, True)]


def test_reporting_client_submits_polls_and_downloads_over_http(live, token):
    reporting = ReportingClient(access_token=token, customer_id=CUSTOMER_ID, account_id=ACCOUNT_ID)
    start, end = date.today() - timedelta(days=2), date.today() - timedelta(days=1)

    report_id = reporting.submit_campaign_performance(start, end, "GreenwichMeanTimeDublinEdinburghLisbonLondon")
    statuses = [reporting.poll(report_id) for _ in range(2)]
    days = reporting.download(statuses[-1].url)

    assert [s.status for s in statuses] == ["Pending", "Success"]
    assert len(days) == 4 and {d.campaign_name for d in days} == {"Brand - Search", "Generic - Search"}
