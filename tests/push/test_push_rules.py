"""Push correctness: goal validation, time guards, retries, dedupe, identity, test mode (issue 4)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from adsync import jobs
from adsync.intake import inbox, matching
from adsync.models import AccountGoal, Connection, Conversion, Push
from adsync.push import goals, maintenance, operations, transitions
from adsync.push.flush import flush_connection
from adsync.sites import api_secrets
from tests.conftest import APPLY_URL, GOALS_URL, TOKEN_URL, bulk_queue, form_fields

pytestmark = pytest.mark.django_db

GOALS = {"ConversionGoals": [
    {"Id": "1", "Name": "Purchase", "Status": "Active", "Type": "OfflineConversion", "ConversionWindowInMinutes": 43200},
    {"Id": "2", "Name": "Lead", "Status": "Paused", "Type": "OfflineConversion"},
    {"Id": "3", "Name": "Visit", "Status": "Active", "Type": "Url"},
], "PartialErrors": []}


def ok(errors=None):
    return {"json": {"PartialErrors": errors or []}, "headers": {"TrackingId": "tid"}}


def apply_calls(mocked):
    return [json.loads(c.request.body) for c in mocked.calls if c.request.url == APPLY_URL]


def batch_error(index, code, symbol, message):
    return {"Index": index, "Code": code, "ErrorCode": symbol, "Message": message, "Type": "BatchError"}


@pytest.fixture
def goal_cache(mocked, connection):
    """The account's goals fetched through ConversionGoals/QueryByIds, first seen a day ago."""
    mocked.post(GOALS_URL, json=GOALS)
    goals.refresh_goals(connection)
    AccountGoal.objects.update(first_seen_at=timezone.now() - timedelta(days=1))
    connection.refresh_from_db()
    return connection


# --- Goal names -------------------------------------------------------------------------------

def test_goal_list_is_fetched_with_no_ids_for_offline_goals(mocked, goal_cache):
    body = json.loads(mocked.calls[0].request.body)
    assert body["ConversionGoalIds"] is None and body["ConversionGoalTypes"] == "OfflineConversion"
    assert set(AccountGoal.objects.values_list("name", flat=True)) == {"Purchase", "Lead", "Visit"}


def test_a_goal_name_differing_by_case_or_space_is_flagged_with_did_you_mean(goal_cache):
    check = goals.GoalBook(goal_cache).check("purchase ")
    assert not check.ok
    assert 'Did you mean "Purchase"?' in check.message()
    assert "Purchase" in check.choices


@pytest.mark.parametrize("name, problem", [("Lead", "Paused"), ("Visit", "not an offline conversion goal")])
def test_paused_and_non_offline_goals_are_flagged(goal_cache, name, problem):
    assert problem in goals.GoalBook(goal_cache).check(name).message()


def test_a_row_for_an_unknown_goal_is_held_back_by_adsync_and_not_sent(mocked, goal_cache, site, make_conversion):
    goal_cache.goal_mappings.update(goal_name="Purchase ")
    make_conversion(site)
    mocked.post(APPLY_URL, **ok())

    flush_connection(goal_cache)

    push = Push.objects.get()
    assert push.status == Push.ERROR and push.is_adsync_error
    assert push.error_symbol == "adsync:goal_not_found" and 'Did you mean "Purchase"?' in push.error_message
    assert apply_calls(mocked) == []


def test_a_row_stopped_before_sending_carries_no_attempt_and_not_the_batchs_tracking_id(mocked, goal_cache, site,
                                                                                        make_conversion):
    good = make_conversion(site)
    stopped = make_conversion(site, occurred_at=timezone.now() - timedelta(days=91))
    mocked.post(APPLY_URL, json={"PartialErrors": []}, headers={"TrackingId": "batch-tracking-id"})

    flush_connection(goal_cache)

    sent, refused = Push.objects.get(conversion=good), Push.objects.get(conversion=stopped)
    assert (sent.status, sent.attempts, sent.tracking_id) == (Push.SENT, 1, "batch-tracking-id")
    assert (refused.status, refused.attempts, refused.tracking_id) == (Push.ERROR, 0, "")
    assert refused.error_symbol == "adsync:older_than_90_days" and refused.error_code is None
    assert [len(body["OfflineConversions"]) for body in apply_calls(mocked)] == [1]


def test_fixing_the_goal_name_requeues_goal_not_found_rows_inside_the_window_only(admin_client, site, connection,
                                                                                 make_conversion):
    recent, old, other = make_conversion(site), make_conversion(site), make_conversion(site)
    Push.objects.update(status=Push.ERROR, error_code=5606, error_message="The conversion name do not match")
    Push.objects.filter(conversion=old).update(conversion_time=timezone.now() - timedelta(days=91))
    Push.objects.filter(conversion=other).update(error_code=5604, error_message="invalid click")
    url = f"/admin/adsync/connection/{connection.pk}/change/"
    data = form_fields(admin_client.get(url).content.decode())

    response = admin_client.post(url, {**data, "goal_mappings-0-goal_name": "Purchase v2"}, follow=True)

    assert "Goal Name of “purchase” is now “Purchase v2”: 1 sync-log row re-queued for the next flush." in [
        str(m) for m in response.context["messages"]]
    by_conv = {p.conversion_id: p for p in Push.objects.all()}
    assert by_conv[recent.pk].status == Push.QUEUED and by_conv[recent.pk].goal_name == "Purchase v2"
    assert by_conv[old.pk].status == Push.ERROR
    assert by_conv[other.pk].status == Push.ERROR and by_conv[other.pk].error_code == 5604


def test_a_goal_first_seen_under_two_hours_ago_holds_rows_instead_of_failing(mocked, goal_cache, site,
                                                                           make_conversion):
    AccountGoal.objects.update(first_seen_at=timezone.now() - timedelta(minutes=30))
    make_conversion(site)

    flush_connection(goal_cache)

    push = Push.objects.get()
    assert push.status == Push.QUEUED and push.attempts == 0
    assert push.next_attempt_at > timezone.now() + timedelta(minutes=80)
    assert apply_calls(mocked) == []


def test_goals_present_at_the_first_fetch_are_usable_at_once_but_new_ones_wait(mocked, connection, site,
                                                                              make_conversion):
    mocked.post(GOALS_URL, json=GOALS)
    goals.refresh_goals(connection)  # first look: "Purchase" already existed in the account
    make_conversion(site)
    mocked.post(APPLY_URL, **ok())
    flush_connection(connection)
    assert Push.objects.get().status == Push.SENT

    newer = {**GOALS, "ConversionGoals": GOALS["ConversionGoals"] + [
        {"Id": "9", "Name": "Renewal", "Status": "Active", "Type": "OfflineConversion"}]}
    mocked.replace("POST", GOALS_URL, json=newer)
    goals.refresh_goals(connection)
    assert goals.GoalBook(connection).settles_at(AccountGoal.objects.get(name="Renewal")) is not None
    assert goals.GoalBook(connection).settles_at(AccountGoal.objects.get(name="Purchase")) is None


# --- Time guards ------------------------------------------------------------------------------

@pytest.mark.parametrize("conversion_after_click, symbol", [
    (timedelta(hours=-1), "adsync:before_click"),
    (timedelta(days=40), "adsync:outside_goal_window"),  # goal window 30 days
])
def test_times_that_microsoft_would_refuse_are_caught_before_sending(mocked, goal_cache, site, make_conversion,
                                                                     conversion_after_click, symbol):
    when = timezone.now().replace(microsecond=0) - timedelta(days=1)
    make_conversion(site, occurred_at=when, click_time=when - conversion_after_click)

    flush_connection(goal_cache)

    push = Push.objects.get()
    assert (push.status, push.error_symbol, push.error_code) == (Push.ERROR, symbol, None)
    assert apply_calls(mocked) == []


def test_a_conversion_in_the_same_second_as_its_click_is_sent(mocked, connection, site, make_conversion):
    """Found by the real-browser test: a conversion reported in the landing's second was failed as before_click."""
    clicked = timezone.now().replace(microsecond=650000) - timedelta(hours=2)
    make_conversion(site, occurred_at=clicked.replace(microsecond=0), click_time=clicked)
    mocked.post(APPLY_URL, **ok())

    flush_connection(connection)

    assert Push.objects.get().status == Push.SENT


@pytest.mark.parametrize("age, symbol", [(timedelta(days=-1), "adsync:future_time"),
                                         (timedelta(days=91), "adsync:older_than_90_days")])
def test_future_and_too_old_conversion_times_are_refused(mocked, connection, site, make_conversion, age, symbol):
    make_conversion(site, occurred_at=timezone.now() - age)

    flush_connection(connection)

    assert Push.objects.get().error_symbol == symbol
    assert apply_calls(mocked) == []


def test_a_click_under_an_hour_old_is_held_then_sent(mocked, settings, connection, site, make_conversion):
    settings.ADSYNC_CLICK_HOLD_MINUTES = 60
    now = timezone.now().replace(microsecond=0)
    make_conversion(site, occurred_at=now - timedelta(minutes=5), click_time=now - timedelta(minutes=20))
    mocked.post(APPLY_URL, **ok())

    flush_connection(connection)
    held = Push.objects.get()
    assert held.status == Push.QUEUED and "less than an hour" in held.error_message
    Push.objects.update(next_attempt_at=timezone.now(), click_time=now - timedelta(hours=2))
    flush_connection(connection)

    assert Push.objects.get().status == Push.SENT
    assert len(apply_calls(mocked)) == 1


def test_conversion_times_are_sent_in_utc_with_a_z(mocked, connection, site, make_conversion):
    from zoneinfo import ZoneInfo

    local = timezone.now().astimezone(ZoneInfo("America/Los_Angeles")).replace(microsecond=0) - timedelta(hours=3)
    make_conversion(site, occurred_at=local)
    mocked.post(APPLY_URL, **ok())

    flush_connection(connection)

    sent = apply_calls(mocked)[0]["OfflineConversions"][0]["ConversionTime"]
    assert sent == local.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- Classification, retries, throttling -------------------------------------------------------

def test_row_errors_are_classified_transient_wait_permanent_and_unknown(mocked, connection, site, make_conversion):
    for _ in range(4):
        make_conversion(site)
    mocked.post(APPLY_URL, **ok([
        batch_error(0, 5612, "OfflineConversionsApplyFailed", "Failed to send offline conversions to internal server."),
        batch_error(1, 5615, "OfflineConversionNotAcceptedForGoal", "wait 2 hours"),
        batch_error(2, 5609, "OfflineConversionTimeOutOfWindow", "The conversion time is out of the conversion window."),
        batch_error(3, 99999, "SomethingNew", "A brand new error."),
    ]))

    flush_connection(connection)

    rows = list(Push.objects.order_by("id"))
    assert [r.status for r in rows] == [Push.QUEUED, Push.QUEUED, Push.ERROR, Push.ERROR]
    assert rows[0].next_attempt_at > timezone.now() and rows[0].error_code == 5612
    assert rows[1].next_attempt_at > timezone.now() + timedelta(minutes=25)
    assert rows[3].error_message == "A brand new error."


def test_the_client_side_rate_limit_stops_the_flush_and_keeps_rows_queued(mocked, settings, connection, site):
    settings.ADSYNC_REQUESTS_PER_MINUTE = 2
    bulk_queue(site, 2500)
    mocked.post(APPLY_URL, **ok())

    result = flush_connection(connection)

    assert len(apply_calls(mocked)) == 2
    assert "rate limit" in result.stopped
    assert Push.objects.filter(status=Push.QUEUED).count() == 500


def test_no_access_106_is_a_connection_problem_not_token_expired(mocked, connection, site, make_conversion):
    make_conversion(site)
    mocked.post(APPLY_URL, status=403, json={"Type": "AdApiFaultDetail", "Errors": [
        {"Code": 106, "ErrorCode": "UserIsNotAuthorized", "Message": "The user is not authorized."}]})

    flush_connection(connection)

    connection.refresh_from_db()
    assert connection.status == Connection.ACTIVE
    assert "106 UserIsNotAuthorized" in connection.last_error
    assert Push.objects.get().status == Push.QUEUED
    assert len(mocked.calls) == 1  # no refresh attempted for 106


def test_a_105_that_a_refresh_does_not_cure_sets_token_expired(mocked, connection, site, make_conversion):
    make_conversion(site)
    fault = {"Type": "AdApiFaultDetail", "Errors": [{"Code": 105, "ErrorCode": "InvalidCredentials",
                                                     "Message": "Authentication failed."}]}
    mocked.post(APPLY_URL, status=401, json=fault)
    mocked.post(TOKEN_URL, json={"access_token": "a2", "refresh_token": "r2", "expires_in": 3600})

    flush_connection(connection)

    connection.refresh_from_db()
    assert connection.status == Connection.TOKEN_EXPIRED
    assert "Authentication failed." in connection.last_error
    assert Push.objects.get().status == Push.QUEUED


# --- Idempotency --------------------------------------------------------------------------------

def test_the_same_goal_click_and_time_never_gets_a_second_push(site, connection, make_conversion):
    first = make_conversion(site, msclkid="a" * 32)
    make_conversion(site, msclkid="a" * 32, occurred_at=first.occurred_at)

    transitions.create_pushes(first)

    assert Push.objects.count() == 1


# --- Identity -----------------------------------------------------------------------------------

def test_a_click_learned_later_queues_the_pending_conversion(site, connection, make_conversion):
    now = timezone.now().replace(microsecond=0)
    conversion = make_conversion(site, msclkid="", visitor_id="v1", occurred_at=now - timedelta(hours=1))
    assert Push.objects.get().status == Push.PENDING_IDENTITY

    queued = matching.attach_click(site, "b" * 32, now - timedelta(days=2), visitor_id="v1")

    push = Push.objects.get()
    assert queued == 1 and push.status == Push.QUEUED and push.msclkid == "b" * 32
    conversion.refresh_from_db()
    assert conversion.click_time == now - timedelta(days=2)


def test_a_click_after_the_conversion_does_not_claim_it(site, connection, make_conversion):
    now = timezone.now().replace(microsecond=0)
    make_conversion(site, msclkid="", hashed_email="e" * 64, occurred_at=now - timedelta(days=3))

    assert matching.attach_click(site, "c" * 32, now - timedelta(days=1), hashed_email="e" * 64) == 0
    assert Push.objects.get().status == Push.PENDING_IDENTITY


def test_pending_rows_expire_visibly_when_microsofts_window_closes(site, connection, make_conversion):
    make_conversion(site, msclkid="", occurred_at=timezone.now() - timedelta(days=91))
    make_conversion(site, msclkid="", occurred_at=timezone.now() - timedelta(days=10))

    assert transitions.expire_pending_identity() == 1
    expired = Push.objects.get(status=Push.ERROR)
    assert expired.error_symbol == "adsync:identity_expired" and "90-day" in expired.error_message


def test_identifiers_older_than_retention_are_purged(site, connection, make_conversion):
    from adsync.models import Click

    old = timezone.now() - timedelta(days=95)
    Click.objects.create(site=site, visitor_id="v", msclkid="d" * 32, clicked_at=old)
    conversion = make_conversion(site, hashed_email="e" * 64, occurred_at=old)
    Push.objects.update(status=Push.ERROR)

    maintenance.purge_identifiers()

    conversion.refresh_from_db()
    assert not Click.objects.exists()
    assert (conversion.msclkid, conversion.hashed_email) == ("", "")
    assert Push.objects.get().msclkid == ""


def test_retention_purges_in_bounded_batches_and_leaves_recent_identifiers(site, connection, make_conversion):
    from django.db import connection as db_connection
    from django.test.utils import CaptureQueriesContext

    from adsync.models import Click

    old, recent = timezone.now() - timedelta(days=95), timezone.now() - timedelta(days=5)
    for n in range(5):
        Click.objects.create(site=site, visitor_id=f"v{n}", msclkid=f"old{n}", clicked_at=old)
        make_conversion(site, hashed_email="e" * 64, occurred_at=old - timedelta(seconds=n))
    Click.objects.create(site=site, visitor_id="v", msclkid="new", clicked_at=recent)
    kept = make_conversion(site, hashed_email="f" * 64, occurred_at=recent)
    Push.objects.update(status=Push.SENT)

    with CaptureQueriesContext(db_connection) as queries:
        purged = maintenance.purge_identifiers(batch=2)

    assert purged == {"clicks": 5, "hits": 0, "conversions": 5, "pushes": 5}
    assert list(Click.objects.values_list("msclkid", flat=True)) == ["new"]
    assert Conversion.objects.exclude(hashed_email="").get() == kept and Push.objects.exclude(msclkid="").count() == 1
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 2 + 2 + 1 clicks: each statement bounded, each its own transaction


def test_enhanced_conversions_send_hashed_only_rows_when_enabled(mocked, site, make_connection, make_conversion):
    conn = make_connection(site, enhanced_conversions=True)
    make_conversion(site, msclkid="", hashed_email="e" * 64)
    mocked.post(APPLY_URL, **ok())

    flush_connection(conn)

    item = apply_calls(mocked)[0]["OfflineConversions"][0]
    assert item["HashedEmailAddress"] == "e" * 64 and "MicrosoftClickId" not in item
    assert Push.objects.get().status == Push.SENT


def test_without_enhanced_conversions_hashed_only_rows_are_pending_identity(site, connection, make_conversion):
    make_conversion(site, msclkid="", hashed_email="e" * 64)
    assert Push.objects.get().status == Push.PENDING_IDENTITY


# --- Test mode, dry run, replay ---------------------------------------------------------------

def test_send_test_conversion_pushes_the_fake_click_id_and_logs_microsofts_rejection(
        mocked, connection, django_capture_on_commit_callbacks):
    message = "The Microsoft Click Id of the offline conversion is invalid."
    mocked.post(APPLY_URL, **ok([batch_error(0, 5604, "OfflineConversionMicrosoftClickIdInvalid", message)]))
    with django_capture_on_commit_callbacks(execute=False):
        push = operations.send_test_conversion(connection.goal_mappings.get())

    flush_connection(connection)

    push.refresh_from_db()
    assert apply_calls(mocked)[0]["OfflineConversions"][0]["MicrosoftClickId"] == "test_msclkid_123"
    assert (push.status, push.error_code, push.error_message) == (Push.ERROR, 5604, message)


def test_a_test_conversion_sent_twice_in_the_same_second_gets_two_sync_log_rows(connection, time_machine):
    time_machine.move_to(timezone.now().replace(microsecond=0), tick=False)  # both clicks in one second
    mapping = connection.goal_mappings.get()

    first = operations.send_test_conversion(mapping)
    second = operations.send_test_conversion(mapping)

    assert first.pk != second.pk and {first.status, second.status} == {Push.QUEUED}
    assert second.conversion_time - first.conversion_time == timedelta(seconds=1)


def test_dry_run_reports_what_would_be_sent_and_changes_nothing(mocked, connection, site, make_conversion, capsys):
    make_conversion(site)
    make_conversion(site, occurred_at=timezone.now() - timedelta(days=100))
    before = list(Push.objects.values())

    call_command("flush_conversions", "--dry-run")

    out = capsys.readouterr().out
    assert "1 row would be sent (1 request to Microsoft); 1 row would not go. Nothing was sent." in out
    assert "1 × refused by adsync's pre-send check (adsync:older_than_90_days)" in out and "more than 90 days old" in out
    assert list(Push.objects.values()) == before
    assert len(mocked.calls) == 0


def test_dry_run_counts_exactly_what_the_flush_then_sends_and_says_why_the_rest_would_not_go(
        admin_client, mocked, goal_cache, site, make_conversion):
    due = [make_conversion(site) for _ in range(2)]
    sent, failed, pending, waiting, unknown_goal = (make_conversion(site) for _ in range(5))
    Push.objects.filter(conversion=sent).update(status=Push.SENT)
    Push.objects.filter(conversion=failed).update(status=Push.ERROR, error_code=5604, error_message="invalid")
    Push.objects.filter(conversion=pending).update(status=Push.PENDING_IDENTITY, msclkid="")
    Push.objects.filter(conversion=waiting).update(next_attempt_at=timezone.now() + timedelta(minutes=30))
    Push.objects.filter(conversion=unknown_goal).update(goal_name="No such goal")
    before = list(Push.objects.order_by("id").values())
    ids = [str(pk) for pk in Push.objects.values_list("pk", flat=True)]

    response = admin_client.post("/admin/adsync/push/", {"action": "validate_dry_run", "_selected_action": ids},
                                 follow=True)

    said = [str(m) for m in response.context["messages"]]
    assert said[0] == "2 rows would be sent (1 request to Microsoft); 5 rows would not go. Nothing was sent."
    assert set(said[1:]) == {
        "1 × already sent", "1 × error: final, not retried (Replay re-queues it)",
        "1 × pending_identity: no msclkid, so Microsoft cannot match it (waits for a click)",
        "1 × not due yet: waiting to retry after a failure",
        '1 × refused by adsync\'s pre-send check (adsync:goal_not_found): No conversion goal named "No such goal" '
        'exists in this account (names are case-sensitive).'}
    assert list(Push.objects.order_by("id").values()) == before
    mocked.post(APPLY_URL, **ok())

    flush_connection(goal_cache)

    assert [len(body["OfflineConversions"]) for body in apply_calls(mocked)] == [2]
    assert set(Push.objects.filter(status=Push.SENT).values_list("conversion", flat=True)) == {
        due[0].pk, due[1].pk, sent.pk}


def test_dry_run_of_a_connection_that_is_not_active_says_its_rows_wait(connection, site, make_conversion, capsys):
    make_conversion(site)
    Connection.objects.filter(pk=connection.pk).update(status=Connection.TOKEN_EXPIRED)

    call_command("flush_conversions", "--dry-run")

    assert "Not flushed: the connection is Token expired; 1 queued row wait" in capsys.readouterr().out


def test_flush_conversions_prints_each_line_once_with_what_still_waits(mocked, connection, site, make_conversion,
                                                                         capfd):
    make_conversion(site)
    make_conversion(site, msclkid="")
    later = make_conversion(site)
    Push.objects.filter(conversion=later).update(next_attempt_at=timezone.now() + timedelta(minutes=10))
    mocked.post(APPLY_URL, **ok())

    call_command("flush_conversions")

    out, err = capfd.readouterr()
    printed = out + err
    assert printed.count("1 sent, 0 errors, 0 to retry, in 1 request") == 1
    waiting_until = (timezone.now() + timedelta(minutes=10)).strftime("%H:%M")
    assert f"still waiting: 1 queued (0 rows due now, 1 waiting until {waiting_until} UTC), 1 pending_identity" in out


def test_replay_requeues_error_rows_inside_the_window_only(site, connection, make_conversion):
    make_conversion(site)
    make_conversion(site, occurred_at=timezone.now() - timedelta(days=95))
    Push.objects.update(status=Push.ERROR, error_code=5604, error_message="invalid")

    assert transitions.replay(Push.objects.all()) == 1
    assert Push.objects.filter(status=Push.QUEUED, error_message="").count() == 1


def test_a_landing_reported_after_an_offline_sale_queues_that_sale(client, site, connection, make_conversion):
    """End to end through the snippet's endpoint: the sale was pending, the click report explains it."""
    sale = make_conversion(site, msclkid="", visitor_id="visitor-9",
                           occurred_at=timezone.now().replace(microsecond=0) + timedelta(seconds=60))
    response = client.post("/t/v1/collect", data=json.dumps({
        "site": site.key, "type": "click", "visitorId": "visitor-9", "msclkid": "f" * 32,
        "url": "https://shop.example.com/?msclkid=" + "f" * 32}), content_type="text/plain",
        HTTP_ORIGIN="https://shop.example.com")
    inbox.drain()  # the worker stores the accepted report

    assert response.status_code == 202
    push = Push.objects.get(conversion=sale)
    assert (push.status, push.msclkid) == (Push.QUEUED, "f" * 32)


def test_a_lead_with_a_click_id_queues_the_same_persons_earlier_ingested_sale(client, site, connection):
    """The CRM sends the sale first (email only), then the lead form that carried the msclkid."""
    secret = api_secrets.issue(site)
    now = timezone.now().replace(microsecond=0)

    def post(body):
        return client.post("/api/v1/conversions", data=json.dumps(body), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {secret}")

    assert post({"event": "purchase", "orderId": "S-1", "email": "jane@example.com",
                 "time": (now - timedelta(hours=1)).isoformat()}).status_code == 201
    assert Push.objects.get().status == Push.PENDING_IDENTITY
    assert post({"event": "lead", "orderId": "L-1", "email": "Jane@Example.com", "msclkid": "a1" * 16,
                 "time": (now - timedelta(days=2)).isoformat()}).status_code == 201

    push = Push.objects.get(conversion__order_id="S-1")
    assert (push.status, push.msclkid) == (Push.QUEUED, "a1" * 16)


def test_refresh_goal_list_action_queues_only_the_connection_id(admin_client, connection,
                                                                django_capture_on_commit_callbacks):
    """The queued task must not pickle the Connection (it would carry decrypted tokens)."""
    from django_q.models import OrmQ

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post("/admin/adsync/connection/", {
            "action": "refresh_goal_list", "_selected_action": [connection.pk]}, follow=True)

    assert response.status_code == 200
    queued = [q.task for q in OrmQ.objects.all()]
    assert queued and all(t["func"] == "adsync.jobs.refresh_goals_now" and t["args"] == (connection.pk,)
                          for t in queued)
    assert not any("access-1" in repr(t) or "refresh-1" in repr(t) for t in queued)


def test_refresh_goals_task_fetches_and_caches(mocked, connection):
    mocked.post(GOALS_URL, json=GOALS)
    assert jobs.refresh_goals_now(connection.pk) == "3 goal(s)"
