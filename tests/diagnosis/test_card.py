"""The diagnosis where people meet it: "Check this connection" on the card, the checklist there, the one-click
goal creation, the runs after Connect and every day, the command, the digest and the support details."""

from __future__ import annotations

import html
from datetime import timedelta
from io import StringIO

import pytest
import responses as responses_lib
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core import mail
from django.core.management import CommandError, call_command
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import OrmQ

from adsync import jobs
from adsync.connections import health
from adsync.diagnosis.run import DEBOUNCE
from adsync.models import AccountGoal, CheckResult, Click, Connection, DiagnosisRun, GoalMapping, StaffNotificationPreference
from adsync.models.diagnosis import FAIL, PASS, WARN
from adsync.notify.digest import send_digest
from adsync.notify.support import support_details
from adsync.security.roles import OPERATORS, VIEWERS, ensure_roles
from emulator.models import EmulatorAccount, EmulatorBehaviour, EmulatorGoal
from tests.conftest import run_queued_jobs

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, db):
    def login(role: str):
        ensure_roles()
        user = get_user_model().objects.create_user(username=role, email=f"{role}@example.com", password="pw-123456789",
                                                    is_staff=True)
        user.groups.add(Group.objects.get(name=role))
        client.force_login(user)
        return client
    return login


@pytest.fixture
def ready_reports(demo):
    """Reports are ready at the first poll, so a queued job's checklist (which really sleeps between polls) is fast."""
    EmulatorBehaviour.objects.filter(pk=EmulatorBehaviour.load().pk).update(report_pending_polls=0)


def queued_functions() -> list[str]:
    return [task.task["func"] for task in OrmQ.objects.order_by("id")]


def card(client, conn: Connection) -> str:
    return html.unescape(client.get(f"/admin/adsync/connection/{conn.pk}/change/").content.decode())


def stored_run(conn: Connection, *results: CheckResult) -> DiagnosisRun:
    """A run as adsync/diagnosis/run.py stores it, for what only reads runs (the digest, the card's state)."""
    from adsync.models.diagnosis import worst

    run = DiagnosisRun.objects.create(connection=conn, outcome=worst(r.outcome for r in results),
                                      checks=[r.to_json() for r in results])
    Connection.objects.filter(pk=conn.pk).update(diagnosis_summary=run.summary())
    return run


AUTO_TAGGING_OFF = CheckResult("auto_tagging", 3, "Auto-tagging (msclkid) on the account", FAIL,
                               "Off: landing URLs carry no msclkid, so new visits cannot be matched.",
                               ["GetAccountProperties: MSCLKIDAutoTaggingEnabled = false."],
                               "Turn on auto-tagging of the Microsoft Click ID in Microsoft Ads.",
                               "https://learn.microsoft.com/en-us/advertising/msa-help/hlp_ba_proc_microsoftclickid",
                               "Microsoft: auto-tagging")


# --- Check this connection ------------------------------------------------------------------------------

def test_check_this_connection_is_an_operator_action_that_queues_the_checklist_without_calling_microsoft(
        staff_client, site, make_connection, mocked, django_capture_on_commit_callbacks):
    conn = make_connection(site)
    client = staff_client(OPERATORS)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/admin/adsync/connection/", {"action": "check_connection",
                                                             "_selected_action": [conn.pk]}, follow=True)

    assert "Check queued for 1 connection:" in response.content.decode()
    task, = OrmQ.objects.all()
    assert task.task["func"] == "adsync.jobs.diagnose"
    assert task.task["args"] == (conn.pk, DiagnosisRun.OPERATOR)
    assert task.task["kwargs"] == {"force": True, "requested_by": OPERATORS}
    assert len(mocked.calls) == 0 and not DiagnosisRun.objects.exists()


def test_viewers_neither_see_the_action_nor_may_queue_a_check_with_the_cards_button(
        staff_client, site, make_connection, django_capture_on_commit_callbacks):
    conn = make_connection(site)
    client = staff_client(VIEWERS)

    changelist = client.get("/admin/adsync/connection/").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        button = client.post(f"/admin/adsync/connection/{conn.pk}/check/", follow=True)

    assert "check_connection" not in changelist
    assert "Only operators can run the checklist on demand" in button.content.decode()
    assert not OrmQ.objects.exists()


def test_the_queued_check_runs_the_checklist_and_the_card_shows_it(connected, ready_reports, admin_client, site):
    Click.objects.create(site=site, visitor_id="v", msclkid="c" * 32, landing_url="https://shop.example.com/?msclkid=c")
    GoalMapping.objects.create(connection=connected, event_name="deal", goal_name="Closed deal")
    assert admin_client.post(f"/admin/adsync/connection/{connected.pk}/check/").status_code == 302

    run_queued_jobs()

    run = DiagnosisRun.objects.get()
    assert (run.trigger, run.requested_by, run.outcome) == (DiagnosisRun.OPERATOR, "admin", FAIL)
    page = card(admin_client, connected)
    assert "Troubleshooting checklist" in page and "by admin" in page
    assert "✔ 1. Tokens and the signed-in user's role: pass" in page
    assert "✖ 4. Goal Names mapped: fail" in page
    assert f'href="/admin/adsync/connection/{connected.pk}/create-goal/?name=Closed+deal">Create “Closed deal” in ' \
           f"Microsoft Ads…</a>" in page
    assert f'href="/admin/adsync/connection/{connected.pk}/reconciliation/">Reconciliation per goal and day' in page
    assert f'formaction="/admin/adsync/connection/{connected.pk}/check/"' in page
    assert "Check 4 failing: Goal Names mapped" in page  # the card's state


def test_the_history_of_runs_is_kept_and_viewers_can_read_it(staff_client, site, make_connection):
    conn = make_connection(site)
    stored_run(conn, AUTO_TAGGING_OFF)
    stored_run(conn, CheckResult("auto_tagging", 3, "Auto-tagging (msclkid) on the account", PASS, "On."))
    client = staff_client(VIEWERS)

    listing = client.get(f"/admin/adsync/diagnosisrun/?connection__id__exact={conn.pk}").content.decode()
    first = client.get(f"/admin/adsync/diagnosisrun/{DiagnosisRun.objects.order_by('id').first().pk}/change/")

    assert listing.count("0 passed, 0 warning(s), 1 failed") == 1 and listing.count("1 passed") == 1
    assert "MSCLKIDAutoTaggingEnabled = false" in first.content.decode()


# --- The card's state -------------------------------------------------------------------------------------

def test_a_failing_check_raises_the_cards_state_but_token_expired_still_comes_first(site, make_connection):
    conn = make_connection(site)
    stored_run(conn, AUTO_TAGGING_OFF)
    conn.refresh_from_db()

    state = health.card_state(conn)
    conn.status = Connection.TOKEN_EXPIRED

    assert (state.label, state.reason, state.hint, state.fix) == (
        "Check 3 failing: Auto-tagging (msclkid) on the account", AUTO_TAGGING_OFF.summary, AUTO_TAGGING_OFF.remedy,
        health.DIAGNOSE)
    assert health.card_state(conn).key == "token_expired"


def test_a_run_with_warnings_only_leaves_the_card_active(site, make_connection):
    conn = make_connection(site, last_insights_sync_at=timezone.now(), goals_refreshed_at=timezone.now())
    stored_run(conn, CheckResult("snippet", 5, "The snippet captures msclkid", WARN, "No landing seen."))
    conn.refresh_from_db()

    assert health.card_state(conn).key == "active"


def test_the_connection_list_costs_the_same_queries_with_diagnosed_connections(admin_client, make_site,
                                                                                make_connection):
    def queries() -> int:
        with CaptureQueriesContext(db_connection) as captured:
            admin_client.get("/admin/adsync/connection/")
        return len(captured)

    stored_run(make_connection(make_site()), AUTO_TAGGING_OFF)
    queries()
    one = queries()
    for _ in range(3):
        stored_run(make_connection(make_site()), AUTO_TAGGING_OFF)

    assert queries() == one


# --- Missing goal, one click ------------------------------------------------------------------------------

def test_a_missing_goal_is_created_in_microsoft_ads_after_a_confirmation_then_the_cache_and_checklist_refresh(
        connected, check, ready_reports, admin_client):
    GoalMapping.objects.create(connection=connected, event_name="deal", goal_name="Closed deal")
    check(connected)
    url = f"/admin/adsync/connection/{connected.pk}/create-goal/?name=Closed+deal"

    confirmation = html.unescape(admin_client.get(url).content.decode())
    posted = admin_client.post(url, {"name": "Closed deal", "window_days": "45", "count_type": "Unique"})
    assert not EmulatorGoal.objects.filter(name="Closed deal").exists()  # queued, not done in the request
    run_queued_jobs()

    assert "<code>Closed deal</code>, exactly as mapped for deal" in confirmation
    assert 'name="window_days" value="30"' in confirmation and 'value="Unique"' in confirmation
    assert "wait <strong>2 hours</strong>" in confirmation
    assert posted.status_code == 302
    goal = EmulatorGoal.objects.get(account__account_id=connected.account_id, name="Closed deal")
    assert (goal.type, goal.conversion_window_in_minutes, goal.count_type) == ("OfflineConversion", 45 * 1440, "Unique")
    assert AccountGoal.objects.filter(connection=connected, name="Closed deal", goal_id=goal.goal_id).exists()
    latest = DiagnosisRun.objects.order_by("-id").first()
    assert latest.trigger == DiagnosisRun.GOAL_CREATED
    assert latest.note.startswith(f"Created the offline conversion goal “Closed deal” (goal id {goal.goal_id})")
    goal_check = latest.result("goal_names")
    assert goal_check.outcome == WARN and "first seen under 2 hours ago" in "\n".join(goal_check.evidence)


def test_the_goal_form_refuses_a_bad_window_or_a_name_that_is_not_missing_and_queues_nothing(
        connected, check, admin_client):
    GoalMapping.objects.create(connection=connected, event_name="deal", goal_name="Closed deal")
    check(connected)
    url = f"/admin/adsync/connection/{connected.pk}/create-goal/"

    too_long = admin_client.post(url, {"name": "Closed deal", "window_days": "91", "count_type": "All"})
    existing = admin_client.post(url, {"name": "Purchase", "window_days": "30", "count_type": "All"})
    unknown = admin_client.get(url + "?name=Purchase")

    assert too_long.status_code == 400
    assert "less than or equal to 90" in too_long.content.decode()
    assert existing.status_code == 400 and "“Purchase” is not a mapped Goal Name missing from the account" in \
        html.unescape(existing.content.decode())
    assert unknown.status_code == 400 and "nothing to create" in unknown.content.decode()
    assert not OrmQ.objects.exists()


def test_microsofts_refusal_to_create_a_goal_is_shown_verbatim_in_the_checklist(connected, check, ready_reports):
    GoalMapping.objects.create(connection=connected, event_name="deal", goal_name="Closed deal")
    check(connected)
    other = EmulatorAccount.objects.create(account_id="187650000", parent_customer_id=connected.customer_id,
                                           name="Sister account")
    EmulatorGoal.objects.create(account=other, name="closed DEAL")  # 5317 compares names across the customer

    line = jobs.create_goal(connected.pk, "Closed deal", 43200, "All")

    assert "5317 ConversionGoalNameAlreadyExists" in line
    note = DiagnosisRun.objects.order_by("-id").first().note
    assert note.startswith("Could not create the goal “Closed deal”: 5317 ConversionGoalNameAlreadyExists")


def test_viewers_cannot_open_the_goal_creation_page(staff_client, site, make_connection):
    conn = make_connection(site, goals={"deal": "Closed deal"})

    assert staff_client(VIEWERS).get(f"/admin/adsync/connection/{conn.pk}/create-goal/?name=Closed+deal").status_code \
        == 403


# --- Runs by itself -----------------------------------------------------------------------------------------

def test_connect_queues_the_checklist_after_the_insights_sync(connected, mocked):
    jobs.connection_ready(connected.pk)

    assert queued_functions() == ["adsync.jobs.sync_insights", "adsync.jobs.diagnose"]
    assert OrmQ.objects.order_by("id").last().task["args"] == (connected.pk, DiagnosisRun.CONNECT)


def test_the_hourly_schedule_queues_only_active_connections_not_checked_for_20_hours(
        site, make_site, make_connection, mocked, django_capture_on_commit_callbacks):
    never = make_connection(site)
    old = make_connection(make_site())
    fresh = make_connection(make_site())
    make_connection(make_site(), status=Connection.DISCONNECTED)
    DiagnosisRun.objects.create(connection=old, started_at=timezone.now() - DEBOUNCE - timedelta(minutes=5))
    DiagnosisRun.objects.create(connection=fresh, started_at=timezone.now() - timedelta(hours=2))

    with django_capture_on_commit_callbacks(execute=True):
        line = jobs.diagnose_due()

    assert line == "queued the diagnosis of 2 connection(s)"
    assert sorted(t.task["args"][0] for t in OrmQ.objects.all()) == [never.pk, old.pk]
    assert jobs.diagnose(fresh.pk).endswith("skipped: checked less than 20 hours ago")
    assert {"name": "adsync:diagnosis", "func": "adsync.jobs.diagnose_due", "schedule_type": "H"} in jobs.schedules()


# --- The command ----------------------------------------------------------------------------------------------

def test_the_command_prints_the_checklist_and_exits_zero_when_nothing_fails(connected, ready_reports, site):
    Click.objects.create(site=site, visitor_id="v", msclkid="c" * 32, landing_url="https://shop.example.com/?msclkid=c")
    out = StringIO()

    call_command("diagnose_connection", "--connection", str(connected.pk), stdout=out)

    text = out.getvalue()
    assert "✔ 1. Tokens and the signed-in user's role: PASS" in text
    assert "✔ 9. Microsoft's count per goal vs what adsync sent: PASS" in text
    assert text.strip().endswith("1 connection(s) checked, 0 with a failing check.")
    assert DiagnosisRun.objects.get().trigger == DiagnosisRun.COMMAND


def test_the_command_exits_non_zero_when_a_check_fails(connected, ready_reports):
    EmulatorAccount.objects.filter(account_id=connected.account_id).update(msclkid_auto_tagging_enabled=False)
    out = StringIO()

    with pytest.raises(CommandError) as failed:
        call_command("diagnose_connection", "--site", connected.site.key, stdout=out)

    assert "1 with a failing check" in str(failed.value)
    assert "✖ 3. Auto-tagging (msclkid) on the account: FAIL" in out.getvalue()
    assert "Fix: Turn on auto-tagging" in out.getvalue()


def test_the_command_names_an_unknown_connection(db):
    with pytest.raises(CommandError, match="No connection with id 999"):
        call_command("diagnose_connection", "--connection", "999")


# --- The digest and the support details -------------------------------------------------------------------------

def test_the_digest_summarises_failing_and_warning_checks_with_their_fix(site, make_site, make_connection):
    user = get_user_model().objects.create_user(username="ops", email="ops@example.com", is_staff=True)
    StaffNotificationPreference.objects.create(user=user)
    failing = make_connection(site, last_insights_sync_at=timezone.now(), goals_refreshed_at=timezone.now())
    stored_run(failing, AUTO_TAGGING_OFF)
    warned = make_connection(make_site(name="Second shop"), last_insights_sync_at=timezone.now(),
                             goals_refreshed_at=timezone.now())
    gap = CheckResult("reconciliation", 9, "Microsoft's count per goal vs what adsync sent", WARN,
                      "Microsoft counts 33 % fewer conversions for “Purchase” than adsync sent (8 vs 12).",
                      remedy="Open the reconciliation panel.", link=f"/admin/adsync/connection/{warned.pk}/reconciliation/",
                      link_label="reconciliation")
    stored_run(warned, gap)

    outcome = send_digest()

    assert outcome.sent == 1
    message, = mail.outbox
    assert message.subject == "[adsync] Sync digest: 1 connection failing a check, 1 connection with a check to look at"
    text, html_body = message.body, html.unescape(message.alternatives[0][0])
    for body in (text, html_body):
        assert "✖ 3. Auto-tagging (msclkid) on the account" in body and AUTO_TAGGING_OFF.remedy in body
        assert "⚠ 9. Microsoft's count per goal vs what adsync sent" in body
        assert "Microsoft counts 33 % fewer conversions for “Purchase” than adsync sent (8 vs 12)." in body
        assert f"http://127.0.0.1:8000/admin/adsync/connection/{warned.pk}/reconciliation/" in body
    assert "Check 3 failing" not in text  # listed once, with the checklist, not again as the card's state


def test_the_support_details_carry_the_latest_checklist(site, make_connection):
    conn = make_connection(site)
    assert "Diagnosis: never run" in support_details(conn)
    stored_run(conn, AUTO_TAGGING_OFF)

    details = support_details(conn)

    assert "✖ 3. Auto-tagging (msclkid) on the account: FAIL — Off: landing URLs carry no msclkid" in details
    assert "     GetAccountProperties: MSCLKIDAutoTaggingEnabled = false." in details
    assert "     Fix: Turn on auto-tagging of the Microsoft Click ID in Microsoft Ads." in details


def test_the_card_page_calls_no_microsoft_endpoint(admin_client, site, make_connection):
    conn = make_connection(site)
    stored_run(conn, AUTO_TAGGING_OFF)

    with responses_lib.RequestsMock():
        page = card(admin_client, conn)

    assert "✖ 3. Auto-tagging (msclkid) on the account: fail" in page
