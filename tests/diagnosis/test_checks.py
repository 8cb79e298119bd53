"""The troubleshooting checklist, check by check: each one's pass and fail, run whole against the built-in
emulator over real HTTP (live_server), or against `responses` where the emulator cannot produce the case."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from adsync.connections import health
from adsync.diagnosis.help_pages import GUIDE_DEVELOPER_TOKEN, HELP_AUTO_TAGGING, HELP_CLICK_ID, HELP_ENHANCED
from adsync.diagnosis.run import diagnose
from adsync.models import CampaignInsight, Click, Connection, DiagnosisRun, GoalMapping, Push
from adsync.models.diagnosis import FAIL, PASS, SKIP, WARN
from emulator import tokens as emulator_tokens
from emulator.demo import SCOPE, SECOND_ACCOUNT_ID
from emulator.models import EmulatorAccount, EmulatorBehaviour, EmulatorGoal, EmulatorUser
from tests.conftest import CAMPAIGN, CUSTOMER, TOKEN_URL
from tests.diagnosis.conftest import no_sleep

pytestmark = pytest.mark.django_db

KEYS = ["tokens", "developer_token", "auto_tagging", "goal_names", "snippet", "pending_identity", "sync_activity",
        "errors", "reconciliation"]


def landing(site, hours_ago: float = 1, origin: str = "https://shop.example.com", visitor: str = "visitor-1",
            n: int = 1) -> None:
    for i in range(n):
        Click.objects.create(site=site, visitor_id=f"{visitor}-{i}", msclkid=f"{visitor}-{hours_ago}-{i}".ljust(32, "0"),
                             clicked_at=timezone.now() - timedelta(hours=hours_ago),
                             landing_url=f"{origin}/landing?msclkid=x{i}")


def outcomes(run: DiagnosisRun) -> dict[str, str]:
    return {r.key: r.outcome for r in run.results}


def text(result) -> str:
    return "\n".join(result.lines())


# --- A healthy card -----------------------------------------------------------------------------------

def test_a_healthy_card_passes_all_nine_checks_in_order_against_the_emulator(connected, check, site):
    landing(site)

    run = check(connected)

    assert [(r.number, r.key) for r in run.results] == list(enumerate(KEYS, start=1))
    assert outcomes(run) == dict.fromkeys(KEYS, PASS), "\n".join(run.checklist_lines())
    assert run.outcome == PASS
    connected.refresh_from_db()
    assert health.card_state(connected).key == "active"
    assert "Super Admin" in text(run.result("tokens"))
    assert "accepted the developer token" in text(run.result("developer_token"))
    assert "MSCLKIDAutoTaggingEnabled = true" in text(run.result("auto_tagging"))


def test_every_run_is_kept_and_the_card_reads_the_latest(connected, check, site):
    landing(site)
    first = check(connected)
    EmulatorAccount.objects.filter(account_id=connected.account_id).update(msclkid_auto_tagging_enabled=False)

    second = check(connected)

    assert list(DiagnosisRun.objects.filter(connection=connected).order_by("started_at")) == [first, second]
    connected.refresh_from_db()
    assert connected.diagnosis_summary["run"] == second.pk
    assert (first.outcome, second.outcome) == (PASS, FAIL)


# --- 1. Tokens ----------------------------------------------------------------------------------------

def test_check_1_passes_by_refreshing_now_and_storing_the_rotated_token(connected, check):
    before = connected.refresh_token

    run = check(connected)

    connected.refresh_from_db()
    assert run.result("tokens").outcome == PASS
    assert connected.refresh_token != before and connected.access_token
    assert before not in text(run.result("tokens")) and connected.access_token not in str(run.checks)


def test_check_1_fails_and_the_card_turns_token_expired_when_microsoft_refuses_the_refresh(connected, check):
    EmulatorBehaviour.objects.filter(pk=EmulatorBehaviour.load().pk).update(refresh_tokens_revoked=True)

    run = check(connected)

    tokens_result = run.result("tokens")
    assert tokens_result.outcome == FAIL
    assert "AADSTS50173" in text(tokens_result)
    assert tokens_result.link == f"/admin/adsync/connection/{connected.pk}/reconnect/"
    assert (run.result("developer_token").outcome, run.result("auto_tagging").outcome) == (SKIP, SKIP)
    assert Connection.objects.get(pk=connected.pk).status == Connection.TOKEN_EXPIRED


def test_check_1_fails_for_a_signed_in_user_who_is_only_a_viewer_on_the_account(demo, site, check):
    viewer = EmulatorUser.objects.get(user_name="demo.viewer")
    conn = Connection.objects.create(
        site=site, status=Connection.ACTIVE, customer_id=demo.customer_id, account_id=SECOND_ACCOUNT_ID,
        refresh_token=emulator_tokens.issue_refresh_token(viewer, django_settings.MICROSOFT_ADS_CLIENT_ID, SCOPE).value)
    GoalMapping.objects.create(connection=conn, event_name="purchase", goal_name="Purchase")

    run = check(conn)

    result = run.result("tokens")
    assert result.outcome == FAIL
    assert "Viewer" in result.summary and "106" in result.summary
    assert "Standard access" in result.remedy


def test_check_1_fails_without_calling_microsoft_for_a_disconnected_card(site, make_connection, mocked):
    conn = make_connection(site, status=Connection.DISCONNECTED, refresh_token="", access_token="")

    run = diagnose(conn, sleep=no_sleep)

    assert run.result("tokens").outcome == FAIL and "Connect" in run.result("tokens").remedy
    assert len(mocked.calls) == 0


# --- 2. Developer token -------------------------------------------------------------------------------

def mock_refresh_and_customer(mocked, *, customer_fault: dict | None = None) -> None:
    mocked.post(TOKEN_URL, json={"token_type": "Bearer", "expires_in": 3600, "access_token": "fresh-access",
                                 "refresh_token": "rotated-refresh"})
    if customer_fault:
        mocked.post(CUSTOMER + "/CustomerManagement/v13/User/Query", status=401, json=customer_fault)
        return
    mocked.post(CUSTOMER + "/CustomerManagement/v13/User/Query", json={
        "User": {"Id": "900001"}, "CustomerRoles": [{"CustomerId": "251234567", "AccountIds": None, "RoleId": 41}]})
    mocked.post(CUSTOMER + "/CustomerManagement/v13/Accounts/Search", json={"Accounts": [
        {"Id": "187654321", "ParentCustomerId": "251234567", "Name": "Shop account", "Number": "F1",
         "CurrencyCode": "USD", "AccountLifeCycleStatus": "Active"}]})


INVALID_CREDENTIALS = {"TrackingId": "t-105", "Type": "AdApiFaultDetail", "Errors": [
    {"Code": 105, "ErrorCode": "InvalidCredentials", "Message": "Authentication failed. Either supplied credentials "
                                                              "are invalid or the account is inactive."}]}


def test_check_2_fails_when_microsoft_refuses_the_developer_token_and_the_card_stays_active(
        site, make_connection, mocked):
    """The emulator accepts whatever developer token adsync is configured with, so Microsoft's 105 comes from
    `responses`: a token for the other environment fails every call made with a fresh access token."""
    conn = make_connection(site, access_token="", token_expires_at=None)
    mock_refresh_and_customer(mocked, customer_fault=INVALID_CREDENTIALS)
    mocked.post(CAMPAIGN + "/CampaignManagement/v13/AccountProperties/Query", status=401, json=INVALID_CREDENTIALS)

    run = diagnose(conn, sleep=no_sleep)

    result = run.result("developer_token")
    assert result.outcome == FAIL
    assert "developer token is not accepted" in result.summary
    assert "105 InvalidCredentials: Authentication failed." in text(result)
    assert result.link == GUIDE_DEVELOPER_TOKEN
    assert run.result("tokens").outcome == WARN and "see check 2" in run.result("tokens").summary
    assert run.result("auto_tagging").outcome == SKIP
    conn.refresh_from_db()
    assert conn.status == Connection.ACTIVE  # a refused developer token is not an expired token
    state = health.card_state(conn)
    assert (state.key, state.label) == (health.CHECK_FAILING, "Check 2 failing: Developer token accepted")
    assert state.hint == result.remedy


def test_check_2_fails_before_any_call_when_production_is_given_the_sandbox_token(
        site, make_connection, mocked, settings):
    settings.MICROSOFT_ADS_ENVIRONMENT = "production"
    settings.MICROSOFT_ADS_DEVELOPER_TOKEN = "BBD37VB98"
    conn = make_connection(site, access_token="", token_expires_at=None)
    mock_refresh_and_customer(mocked)

    run = diagnose(conn, sleep=no_sleep)

    assert run.result("developer_token").outcome == FAIL
    assert "sandbox's universal token" in run.result("developer_token").summary
    assert not any("AccountProperties" in call.request.url for call in mocked.calls)


# --- 3. Auto-tagging ----------------------------------------------------------------------------------

def test_check_3_fails_when_auto_tagging_is_switched_off_in_the_account(connected, check, site):
    landing(site)
    EmulatorAccount.objects.filter(account_id=connected.account_id).update(msclkid_auto_tagging_enabled=False)

    run = check(connected)

    result = run.result("auto_tagging")
    assert result.outcome == FAIL
    assert "MSCLKIDAutoTaggingEnabled = false" in text(result)
    assert result.link == HELP_AUTO_TAGGING
    connected.refresh_from_db()
    state = health.card_state(connected)
    assert state.label == "Check 3 failing: Auto-tagging (msclkid) on the account"
    assert state.reason == result.summary and state.hint == result.remedy and state.colour == "#cf222e"


# --- 4. Goal Names ------------------------------------------------------------------------------------

def map_goal(conn: Connection, name: str, event: str = "purchase") -> None:
    GoalMapping.objects.update_or_create(connection=conn, event_name=event, defaults={"goal_name": name})


def test_check_4_flags_a_goal_name_with_a_trailing_space_and_says_which_name_was_meant(connected, check):
    map_goal(connected, "Purchase ")

    result = check(connected).result("goal_names")

    assert result.outcome == FAIL
    assert "did you mean “Purchase”?" in text(result)
    assert result.data["missing_goals"] == []  # a typo is fixed in the mapping, not by creating a goal
    assert "exact Goal Name “Purchase”" in result.remedy


def test_check_4_offers_to_create_a_goal_that_does_not_exist(connected, check):
    map_goal(connected, "Closed deal")

    result = check(connected).result("goal_names")

    assert result.outcome == FAIL
    assert result.data["missing_goals"] == ["Closed deal"]
    assert "no such goal in the account" in text(result)
    assert result.link == f"/admin/adsync/connection/{connected.pk}/create-goal/?name=Closed+deal"


def test_check_4_fails_for_a_paused_goal_and_for_a_goal_that_is_not_offline(connected, check):
    EmulatorGoal.objects.create(account=EmulatorAccount.objects.get(account_id=connected.account_id),
                                name="Visits", type="Url")
    map_goal(connected, "Old Goal")
    map_goal(connected, "Visits", event="visit")

    result = check(connected).result("goal_names")

    assert result.outcome == FAIL
    assert "✖ purchase → “Old Goal”: the goal is Paused." in result.evidence
    assert "✖ visit → “Visits”: a Url goal, not an offline conversion goal." in result.evidence


def test_check_4_fails_when_the_card_sends_email_only_conversions_to_a_goal_without_enhanced_conversions(
        connected, check):
    Connection.objects.filter(pk=connected.pk).update(enhanced_conversions=True)
    map_goal(connected, "Signup")

    result = check(connected).result("goal_names")

    assert result.outcome == FAIL
    assert "enhanced conversions OFF" in text(result)
    assert result.link == HELP_ENHANCED


def test_check_4_warns_when_conversions_come_later_after_their_click_than_the_goal_window(
        connected, check, make_conversion, site):
    EmulatorGoal.objects.filter(account__account_id=connected.account_id, name="Purchase").update(
        conversion_window_in_minutes=1440)
    now = timezone.now().replace(microsecond=0)
    make_conversion(site, click_time=now - timedelta(days=3), occurred_at=now - timedelta(hours=1))
    make_conversion(site, click_time=now - timedelta(hours=5), occurred_at=now - timedelta(hours=1))

    result = check(connected).result("goal_names")

    assert result.outcome == WARN
    assert "1-day conversion window; 1 of 2 conversions of the last 30 days came later" in text(result)
    assert "Lengthen the conversion window" in result.remedy


def test_check_4_fails_when_no_event_is_mapped(connected, check):
    GoalMapping.objects.filter(connection=connected).delete()

    result = check(connected).result("goal_names")

    assert result.outcome == FAIL and "No event is mapped" in result.summary


def test_check_4_warns_with_microsofts_answer_when_the_goal_list_cannot_be_fetched(site, make_connection, mocked):
    conn = make_connection(site, access_token="", token_expires_at=None)
    mock_refresh_and_customer(mocked)
    mocked.post(CAMPAIGN + "/CampaignManagement/v13/AccountProperties/Query",
                json={"AccountProperties": [{"Name": "MSCLKIDAutoTaggingEnabled", "Value": "true"}]})
    mocked.post(CAMPAIGN + "/CampaignManagement/v13/ConversionGoals/QueryByIds", status=500, json={
        "TrackingId": "t-0", "Errors": [{"Code": 0, "ErrorCode": "InternalError", "Message": "An internal error."}]})

    result = diagnose(conn, sleep=no_sleep).result("goal_names")

    assert result.outcome == WARN
    assert "The goal list could not be fetched now: 0 InternalError: An internal error." in result.evidence
    conn.refresh_from_db()
    assert conn.last_error_operation == Connection.GOAL_REFRESH


# --- 5. The snippet -----------------------------------------------------------------------------------

def test_check_5_counts_msclkid_landings_per_origin_over_24_hours_and_7_days(connected, check, site):
    site.allowed_origins = "https://shop.example.com\nhttps://www.example.com"
    site.save()
    landing(site, hours_ago=2, n=3)
    landing(site, hours_ago=72, n=2, visitor="older")
    landing(site, hours_ago=5, origin="https://www.example.com", visitor="www")

    result = check(connected).result("snippet")

    assert result.outcome == PASS
    assert "https://shop.example.com: 3 landing(s) with msclkid in the last 24 h, 5 in 7 days" in result.evidence
    assert "https://www.example.com: 1 landing(s) with msclkid in the last 24 h, 1 in 7 days" in result.evidence


def test_check_5_fails_a_site_with_conversions_but_no_click_at_all(connected, check, site, make_conversion):
    make_conversion(site, msclkid="")

    result = check(connected).result("snippet")

    assert result.outcome == FAIL
    assert "snippet is missing on landing pages" in result.summary
    assert result.link == f"/admin/adsync/site/{site.pk}/change/"


def test_check_5_warns_when_the_snippet_sees_far_fewer_landings_than_microsoft_counts_clicks(connected, check, site):
    yesterday = timezone.now().date() - timedelta(days=1)
    CampaignInsight.objects.create(connection=connected, date=yesterday, campaign_id="1", clicks=100)
    landing(site, hours_ago=24 + timezone.now().hour, n=10)

    result = check(connected).result("snippet")

    assert result.outcome == WARN
    assert "Microsoft counted 100 ad click(s) over the 7 days before today; the snippet saw 10 landing(s) (10%)." \
        in result.evidence


# --- 6. pending_identity explained ---------------------------------------------------------------------

def test_check_6_explains_pending_identity_rows_with_the_share_of_each_cause(connected, check, site, make_conversion):
    now = timezone.now().replace(microsecond=0)
    Click.objects.create(site=site, visitor_id="returning", msclkid="a" * 32, clicked_at=now - timedelta(days=100))
    for i in range(6):
        make_conversion(site, msclkid="", visitor_id=f"never-clicked-{i}")
    for _ in range(2):
        make_conversion(site, msclkid="", visitor_id="returning")
    for i in range(2):
        make_conversion(site, msclkid="", visitor_id=f"with-email-{i}", hashed_email=f"{i}" * 64)
    landing(site)

    result = check(connected).result("pending_identity")

    assert result.outcome == WARN
    assert "Last 7 days: 10 of 10 sync-log row(s) pending_identity (100%)." in result.evidence
    assert "  8 (80%): no click ever seen for the visitor before the conversion" in result.evidence
    assert "  2 (20%): the visitor's click is older than 90 days" in result.evidence
    assert "  8 (80%): no email or phone either (nothing for enhanced conversions)" in result.evidence
    assert "  2 (20%): an email or phone, but enhanced conversions are off on this card" in result.evidence
    assert result.link == HELP_CLICK_ID


def test_check_6_passes_when_few_rows_wait_for_an_msclkid(connected, check, site, make_conversion):
    for _ in range(9):
        make_conversion(site)
    make_conversion(site, msclkid="", visitor_id="someone")

    result = check(connected).result("pending_identity")

    assert result.outcome == PASS
    assert "Last 7 days: 1 of 10 sync-log row(s) pending_identity (10%)." in result.evidence


# --- 7. Flush and insights ------------------------------------------------------------------------------

def test_check_7_fails_when_rows_are_due_and_no_flush_ran_for_a_long_time(connected, check, site, make_conversion):
    make_conversion(site)
    Push.objects.update(next_attempt_at=timezone.now() - timedelta(minutes=40))
    Connection.objects.filter(pk=connected.pk).update(last_flush_at=timezone.now() - timedelta(hours=2))

    result = check(connected).result("sync_activity")

    assert result.outcome == FAIL
    assert "worker" in result.summary and "qcluster" in result.remedy
    assert "Rows waiting to be sent now: 1, the oldest due since" in text(result)


def test_check_7_warns_when_the_insights_sync_is_stale_and_shows_why_it_failed(connected, check):
    failed_at = timezone.now() - timedelta(hours=3)
    Connection.objects.filter(pk=connected.pk).update(
        last_insights_sync_at=timezone.now() - timedelta(days=2), last_error="207 ConcurrentRequestOverLimit: Too many",
        last_error_at=failed_at, last_error_operation=Connection.INSIGHTS, last_error_kind="throttled",
        last_error_code="207")

    result = check(connected).result("sync_activity")

    assert result.outcome == WARN
    assert result.summary == "The insights sync has not succeeded for 24 hours."
    assert any("Insights sync failed" in line and "207 ConcurrentRequestOverLimit: Too many" in line
               for line in result.evidence)


# --- 8. Errors of the last 24 hours -------------------------------------------------------------------

def error_rows(site, make_conversion, count: int, code: int, symbol: str, message: str) -> None:
    conversions = [make_conversion(site) for _ in range(count)]
    Push.objects.filter(conversion__in=conversions).update(status=Push.ERROR, error_code=code, error_symbol=symbol,
                                                           error_message=message, tracking_id=f"track-{code}")


def test_check_8_lists_each_error_class_of_the_day_with_one_verbatim_sample(connected, check, site, make_conversion):
    error_rows(site, make_conversion, 3, 5604, "OfflineConversionMicrosoftClickIdInvalid",
               "The Microsoft Click Id of the offline conversion is invalid.")

    result = check(connected).result("errors")

    assert result.outcome == WARN
    assert result.evidence == ["5604 OfflineConversionMicrosoftClickIdInvalid (row): 3 row(s) — Microsoft said: “The "
                               "Microsoft Click Id of the offline conversion is invalid.” (TrackingId track-5604)"]
    assert result.link == f"/admin/adsync/push/?connection__id__exact={connected.pk}&status__exact=error"


def test_check_8_fails_when_an_error_class_stops_the_whole_connection(connected, check, site, make_conversion):
    error_rows(site, make_conversion, 1, 106, "UserIsNotAuthorized", "The user does not represent a authorized developer.")

    result = check(connected).result("errors")

    assert result.outcome == FAIL
    assert "Reconnect" in result.remedy
