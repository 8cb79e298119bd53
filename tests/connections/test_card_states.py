"""The card's state at a glance: each state's colour, reason and one fix, the same on the list, the card,
the dashboard, the digest and the support details; and what Connect, Reconnect and an account switch leave."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import responses
from django.core import mail
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ

from adsync.connections import health
from adsync.links import sync_log_url
from adsync.models import AccountGoal, CampaignInsight, Connection, Push, StaffNotificationPreference
from adsync.notify.digest import send_digest
from adsync.notify.support import support_details
from adsync.push.flush import flush_connection
from tests.conftest import APPLY_URL, GOALS_URL, run_queued_jobs
from tests.connections.test_connection_lifecycle import (
    AGENCY,
    STORE,
    callback,
    mock_consent,
    pick_url,
    start,
)

pytestmark = pytest.mark.django_db


def fault(code: int, symbol: str, message: str, status: int = 400, **headers) -> dict:
    return {"status": status, "headers": headers,
            "json": {"Type": "AdApiFaultDetail", "TrackingId": "t-1",
                     "Errors": [{"Code": code, "ErrorCode": symbol, "Message": message}]}}


@pytest.fixture
def ready(site, make_connection):
    """A connection whose goals were fetched and whose insights synced an hour ago: green until something fails."""
    def make(**kwargs) -> Connection:
        now = timezone.now()
        connection = make_connection(site, goals_refreshed_at=now - timedelta(hours=1),
                                     last_insights_sync_at=now - timedelta(hours=1), **kwargs)
        AccountGoal.objects.create(connection=connection, goal_id="1", name="Purchase",
                                   first_seen_at=now - timedelta(days=3))
        return connection
    return make


def state_after_upload(mocked, connection, site, make_conversion, answer: dict) -> health.CardState:
    """The card after a real flush whose ApplyOfflineConversions call got `answer`."""
    make_conversion(site)
    mocked.post(APPLY_URL, **answer)
    flush_connection(connection)
    return health.card_state(Connection.objects.get(pk=connection.pk))


@pytest.mark.parametrize("answer, label, colour, fix", [
    (fault(106, "UserIsNotAuthorized", "The user is not authorized to perform this action.", 403),
     "Failing: no access to this account", health.RED, health.RECONNECT),
    (fault(122, "PersonalIdentityNotAvailable", "The personal identity is not available."),
     "Failing: sign-in refused", health.RED, health.RECONNECT),
    (fault(5613, "OfflineConversionPilotNotEnabledForCustomer", "Not enabled."),
     "Failing: account or developer token refused", health.RED, health.SYNC_LOG),
    (fault(1102, "CampaignServiceInvalidAccountId", "The account ID is invalid."),
     "Failing: account or developer token refused", health.RED, health.RECONNECT),
    (fault(0, "InternalError", "An internal error has occurred.", 500),
     "Uploads retrying", health.AMBER, health.SYNC_LOG),
    (fault(117, "CallRateExceeded", "Too many calls.", 429, **{"Retry-After": "300"}),
     "Throttled by Microsoft", health.AMBER, health.SYNC_LOG),
])
def test_a_failing_upload_never_leaves_the_card_green(mocked, site, ready, make_conversion, answer, label, colour,
                                                      fix):
    connection = ready()

    state = state_after_upload(mocked, connection, site, make_conversion, answer)

    assert (state.label, state.colour, state.fix) == (label, colour, fix)
    assert state.colour != health.GREEN and state.reason and state.message


def test_an_upload_call_microsoft_takes_clears_an_earlier_upload_failure_even_if_its_rows_fail(
        mocked, site, ready, make_conversion):
    """The account answers again: the card is no longer "Uploads retrying", though the row itself was refused."""
    connection = ready()
    assert state_after_upload(mocked, connection, site, make_conversion,
                              fault(0, "InternalError", "An internal error has occurred.", 500)).label == "Uploads retrying"
    Push.objects.update(next_attempt_at=timezone.now())
    mocked.replace(responses.POST, APPLY_URL, json={"PartialErrors": [
        {"Index": 0, "Code": 5604, "ErrorCode": "OfflineConversionMicrosoftClickIdInvalid",
         "Message": "The Microsoft Click Id of the offline conversion is invalid."}]})

    flush_connection(Connection.objects.get(pk=connection.pk))

    assert health.card_state(Connection.objects.get(pk=connection.pk)).label != "Uploads retrying"


def test_a_failing_upload_stops_counting_once_an_upload_succeeds(mocked, site, ready, make_conversion):
    connection = ready()
    state_after_upload(mocked, connection, site, make_conversion,
                       fault(106, "UserIsNotAuthorized", "The user is not authorized to perform this action.", 403))
    mocked.replace(mocked.POST, APPLY_URL, json={"PartialErrors": []}, headers={"TrackingId": "t-2"})
    Push.objects.update(next_attempt_at=timezone.now())

    flush_connection(Connection.objects.get(pk=connection.pk))

    assert health.card_state(Connection.objects.get(pk=connection.pk)) == health.ACTIVE


@pytest.mark.parametrize("changes, label, fix", [
    ({"status": Connection.DISCONNECTED}, "Disconnected", health.CONNECT),
    ({"status": Connection.TOKEN_EXPIRED, "last_error": "invalid_grant: AADSTS70000"}, "Token expired",
     health.RECONNECT),
    ({"goals_refreshed_at": None}, "Goal list not fetched yet", health.REFRESH_GOALS),
    ({"last_insights_sync_at": timezone.now() - timedelta(hours=30)}, "Active but stale", health.RESYNC),
    ({"last_error": "0 InternalError: An internal error has occurred.", "last_error_at": timezone.now(),
      "last_error_operation": Connection.GOAL_REFRESH, "last_error_kind": "transient", "last_error_code": "0"},
     "Goal list refresh failing", health.REFRESH_GOALS),
    ({"last_error": "Network error: connection refused", "last_error_at": timezone.now(),
      "last_error_operation": Connection.INSIGHTS, "last_error_kind": "transient"},
     "Insights sync failing (adsync retries)", health.RESYNC),
    ({}, "Active", ""),
])
def test_each_state_has_a_colour_a_reason_and_one_fix(ready, changes, label, fix):
    connection = ready()
    Connection.objects.filter(pk=connection.pk).update(**changes)

    state = health.card_state(Connection.objects.get(pk=connection.pk))

    assert (state.label, state.fix) == (label, fix)
    assert state.colour in (health.GREEN, health.AMBER, health.RED, health.GREY) and state.reason.endswith(".")
    assert (state.colour == health.GREEN) == (label == "Active")


def test_a_new_connection_is_not_stale_during_its_first_day(site, make_connection):
    connection = make_connection(site, goals_refreshed_at=timezone.now(), connected_at=timezone.now())
    assert health.card_state(connection) == health.ACTIVE
    Connection.objects.filter(pk=connection.pk).update(connected_at=timezone.now() - timedelta(hours=25))
    assert health.card_state(Connection.objects.get(pk=connection.pk)).label == "Active but stale"


# --- The same state, colour and link everywhere -------------------------------------------------------

def test_the_list_card_dashboard_digest_and_support_details_show_the_same_state_colour_and_fix(
        admin_client, admin_user, mocked, site, ready, make_conversion, django_capture_on_commit_callbacks):
    connection = ready()
    state = state_after_upload(mocked, connection, site, make_conversion,
                               fault(106, "UserIsNotAuthorized", "The user is not authorized to perform this action.",
                                     403))
    reconnect = reverse("admin:adsync_connection_reconnect", args=[connection.pk])
    StaffNotificationPreference.objects.create(user=admin_user, digest=True)

    pages = {
        "list": admin_client.get(reverse("admin:adsync_connection_changelist")).content.decode(),
        "card": admin_client.get(reverse("admin:adsync_connection_change", args=[connection.pk])).content.decode(),
        "dashboard": admin_client.get(reverse("adsync_dashboard")).content.decode(),
    }
    send_digest()
    pages["digest"] = mail.outbox[0].alternatives[0][0]
    pages["support"] = support_details(Connection.objects.get(pk=connection.pk))

    for name, page in pages.items():
        assert state.label in page, name
        assert reconnect in page, name
    for name in ("list", "card", "dashboard", "digest"):
        assert state.colour in pages[name], name
    assert f"Card status: {state.label} ({state.reason})" in pages["support"]
    assert f"Fix: Reconnect: http://127.0.0.1:8000{reconnect}" in pages["support"]


def test_the_list_keeps_microsofts_long_words_out_of_its_cell(admin_client, ready):
    connection = ready()
    long_words = "invalid_grant: AADSTS70000: " + "trace id 0123456789abcdef " * 10
    Connection.objects.filter(pk=connection.pk).update(status=Connection.TOKEN_EXPIRED, last_error=long_words)

    page = admin_client.get(reverse("admin:adsync_connection_changelist")).content.decode()
    cell = page.split('class="field-problem"')[1].split("</td>")[0]

    assert "Microsoft no longer accepts this connection" in cell
    assert f'title="{long_words}' in cell and f">{long_words}" not in cell


# --- The fixes ---------------------------------------------------------------------------------------

def test_refresh_goals_asks_then_fetches_the_goal_list(admin_client, mocked, site, make_connection,
                                                      django_capture_on_commit_callbacks):
    connection = make_connection(site)
    url = reverse("admin:adsync_connection_refresh_goals", args=[connection.pk])
    mocked.post(GOALS_URL, json={"ConversionGoals": [{"Id": "1", "Name": "Purchase", "Status": "Active",
                                                      "Type": "OfflineConversion"}], "PartialErrors": []})

    asked = admin_client.get(url)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(url)
    run_queued_jobs()

    assert asked.status_code == 200 and b'value="Refresh goals"' in asked.content
    assert list(AccountGoal.objects.filter(connection=connection).values_list("name", flat=True)) == ["Purchase"]
    assert health.card_state(Connection.objects.get(pk=connection.pk)).label != "Goal list not fetched yet"


def test_resync_now_asks_then_queues_the_insights_sync(admin_client, connection, django_capture_on_commit_callbacks):
    url = reverse("admin:adsync_connection_resync", args=[connection.pk])

    assert b'value="Resync now"' in admin_client.get(url).content
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(url)

    assert [task.func() for task in OrmQ.objects.all()] == ["adsync.jobs.sync_insights"]


def test_viewers_cannot_run_a_fix(client, site, make_connection):
    from django.contrib.auth.models import Group, User

    from adsync.security.roles import VIEWERS, ensure_roles

    ensure_roles()
    viewer = User.objects.create_user("vic", is_staff=True)
    viewer.groups.add(Group.objects.get(name=VIEWERS))
    client.force_login(viewer)
    connection = make_connection(site)

    for name in ("refresh_goals", "resync"):
        assert client.post(reverse(f"admin:adsync_connection_{name}", args=[connection.pk])).status_code == 403
    assert not OrmQ.objects.exists()


# --- Connect, Reconnect, account switch ---------------------------------------------------------------

def test_a_viewer_picked_at_connect_makes_the_card_failing_before_any_upload(admin_client, mocked, site,
                                                                           django_capture_on_commit_callbacks):
    connection = Connection.objects.create(site=site)
    params = start(admin_client, connection)
    mock_consent(mocked, role_id=100)
    callback(admin_client, code="the-code", state=params["state"])

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(pick_url(connection), {"account_id": STORE})

    state = health.card_state(Connection.objects.get(pk=connection.pk))
    assert (state.label, state.colour, state.fix) == ("Failing: no access to this account", health.RED,
                                                      health.RECONNECT)
    assert "Viewer" in state.reason


def test_after_connect_the_goals_are_fetched_and_the_insights_sync_queued_at_once(
        admin_client, mocked, site, django_capture_on_commit_callbacks):
    connection = Connection.objects.create(site=site)
    params = start(admin_client, connection)
    mock_consent(mocked)
    callback(admin_client, code="the-code", state=params["state"])
    mocked.post(GOALS_URL, json={"ConversionGoals": [{"Id": "9", "Name": "Purchase", "Status": "Active",
                                                      "Type": "OfflineConversion"}], "PartialErrors": []})

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(pick_url(connection), {"account_id": STORE})
    ready_task = OrmQ.objects.get()
    assert ready_task.func() == "adsync.jobs.connection_ready"
    with django_capture_on_commit_callbacks(execute=True):
        line = run_queued_jobs()[0]

    assert "goals: 1 goal" in line
    assert AccountGoal.objects.filter(connection=connection, name="Purchase").exists()
    assert [task.func() for task in OrmQ.objects.all()] == ["adsync.jobs.sync_insights", "adsync.jobs.diagnose"]
    assert health.card_state(Connection.objects.get(pk=connection.pk)) == health.ACTIVE  # not stale on day one


def test_an_account_switch_drops_the_old_accounts_goals_and_insights(admin_client, mocked, site, ready,
                                                                      django_capture_on_commit_callbacks):
    connection = ready()
    AccountGoal.objects.create(connection=connection, goal_id="2", name="Old account goal")
    CampaignInsight.objects.create(connection=connection, date=date.today(), campaign_id="c1",
                                   campaign_name="Old account campaign", conversions=79)
    params = start(admin_client, connection, "reconnect")
    mock_consent(mocked)
    callback(admin_client, code="the-code", state=params["state"])

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(pick_url(connection), {"account_id": AGENCY, "confirm_switch": "on"})

    switched = Connection.objects.get(pk=connection.pk)
    assert switched.account_id == AGENCY
    assert not CampaignInsight.objects.filter(connection=connection).exists()
    assert not AccountGoal.objects.filter(connection=connection).exists()
    assert switched.last_insights_sync_at is None and switched.goals_refreshed_at is None
    card = admin_client.get(reverse("admin:adsync_connection_change", args=[connection.pk])).content.decode()
    assert "Old account campaign" not in card and "79" not in card.split("Last 14 days")[1][:3000]
    assert [task.func() for task in OrmQ.objects.all()] == ["adsync.jobs.connection_ready"]


def test_a_reconnect_to_the_same_account_keeps_its_insights(admin_client, mocked, site, ready,
                                                           django_capture_on_commit_callbacks):
    connection = ready()
    CampaignInsight.objects.create(connection=connection, date=date.today(), campaign_id="c1", conversions=5)
    params = start(admin_client, connection, "reconnect")
    mock_consent(mocked)
    callback(admin_client, code="the-code", state=params["state"])

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(pick_url(connection), {"account_id": STORE})

    assert CampaignInsight.objects.filter(connection=connection).count() == 1


def test_the_sync_log_fix_opens_the_connections_waiting_rows(ready):
    connection = ready()
    state = health.CardState("retrying", "Uploads retrying", health.AMBER, "x.", fix=health.SYNC_LOG,
                             log_status=Push.QUEUED)
    assert health.fix_link(state, connection.pk) == (
        "Open the sync log", sync_log_url(connection_id=connection.pk, status=Push.QUEUED))
