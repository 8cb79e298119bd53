"""The flush at the HTTP boundary: batching, partial errors, whole-call failures, overlap."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
import requests
from django.db import connection as db_connection
from django.utils import timezone

from adsync.jobs import run_flush as flush_conversions
from adsync.models import Connection, Push
from adsync.push.claims import claim_batch
from adsync.push.flush import flush_connection
from tests.conftest import APPLY_URL, TOKEN_URL, bulk_queue

pytestmark = pytest.mark.django_db


def ok(tracking_id: str = "tracking-1", partial_errors=None):
    return {"json": {"PartialErrors": partial_errors or []}, "headers": {"TrackingId": tracking_id}}


def sent_bodies(mocked) -> list[dict]:
    return [json.loads(call.request.body) for call in mocked.calls if call.request.url == APPLY_URL]


def test_a_queued_conversion_is_sent_with_microsofts_four_headers_and_marked_sent(mocked, site, connection,
                                                                                   make_conversion):
    conversion = make_conversion(site, msclkid="f894f652ea334e739002f7167ab8f8e3")
    mocked.post(APPLY_URL, **ok("9eaafe65"))

    flush_conversions()

    request = mocked.calls[0].request
    assert request.headers["Authorization"] == "Bearer access-1"
    assert request.headers["DeveloperToken"] == "dev-token"
    assert request.headers["CustomerId"] == "251234567"
    assert request.headers["CustomerAccountId"] == "187654321"
    item = json.loads(request.body)["OfflineConversions"][0]
    assert item == {
        "ConversionName": "Purchase",
        "ConversionTime": conversion.occurred_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ConversionValue": 10.5,
        "ConversionCurrencyCode": "USD",
        "MicrosoftClickId": "f894f652ea334e739002f7167ab8f8e3",
    }
    push = Push.objects.get()
    assert (push.status, push.tracking_id, push.attempts) == (Push.SENT, "9eaafe65", 1)
    connection.refresh_from_db()
    assert connection.last_flush_at is not None


def test_2500_rows_go_out_in_three_requests_of_at_most_1000(mocked, site, connection):
    bulk_queue(site, 2500)
    mocked.post(APPLY_URL, **ok())

    flush_conversions()

    assert [len(body["OfflineConversions"]) for body in sent_bodies(mocked)] == [1000, 1000, 500]
    assert Push.objects.filter(status=Push.SENT).count() == 2500


def test_partial_errors_are_mapped_by_index_not_position(mocked, site, connection, make_conversion):
    conversions = [make_conversion(site) for _ in range(4)]
    errors = [  # deliberately out of order: the list is not positional (docs/microsoft-api.md#response-model)
        {"Code": 5606, "ErrorCode": "OfflineConversionNameInvalid", "Index": 3, "Type": "BatchError",
         "Message": "The conversion name do not match an existing offline conversion goal."},
        {"Code": 5604, "ErrorCode": "OfflineConversionMicrosoftClickIdInvalid", "Index": 1, "Type": "BatchError",
         "Message": "The Microsoft Click Id of the offline conversion is invalid."},
    ]
    mocked.post(APPLY_URL, **ok("track-77", errors))

    flush_conversions()

    by_order = {p.conversion.order_id: p for p in Push.objects.select_related("conversion")}
    statuses = [by_order[c.order_id].status for c in conversions]
    assert statuses == [Push.SENT, Push.ERROR, Push.SENT, Push.ERROR]
    rejected = by_order[conversions[1].order_id]
    assert (rejected.error_code, rejected.error_symbol) == (5604, "OfflineConversionMicrosoftClickIdInvalid")
    assert rejected.error_message == "The Microsoft Click Id of the offline conversion is invalid."
    assert by_order[conversions[3].order_id].error_code == 5606
    assert {p.tracking_id for p in by_order.values()} == {"track-77"}


@pytest.mark.parametrize("failure", [
    {"status": 500, "body": "Internal Server Error"},
    {"status": 503, "json": {"Type": "AdApiFaultDetail", "TrackingId": "t",
                             "Errors": [{"Code": 0, "ErrorCode": "InternalError", "Message": "An internal error"}]}},
    {"body": requests.ConnectionError("connection refused")},
    {"body": requests.Timeout("read timed out")},
])
def test_a_whole_call_failure_leaves_every_row_queued_and_never_sent(mocked, site, connection, make_conversion,
                                                                      failure):
    make_conversion(site)
    make_conversion(site)
    mocked.post(APPLY_URL, **failure)

    result = flush_connection(connection)

    assert result.sent == 0 and result.requeued == 2
    for push in Push.objects.all():
        assert push.status == Push.QUEUED
        assert push.sent_at is None
        assert push.claim_token is None
        assert push.next_attempt_at > timezone.now()  # backed off, picked up by a later flush
    connection.refresh_from_db()
    assert connection.last_error


def test_rows_retried_after_a_failure_are_sent_by_a_later_flush_with_the_same_conversion_time(
        mocked, site, connection, make_conversion):
    make_conversion(site)
    mocked.post(APPLY_URL, status=500)
    flush_connection(connection)
    Push.objects.update(next_attempt_at=timezone.now())
    mocked.replace("POST", APPLY_URL, **ok())

    flush_connection(connection)

    first, second = sent_bodies(mocked)
    assert first == second
    assert Push.objects.get().status == Push.SENT


def test_transient_failures_stop_after_the_attempt_bound_with_the_last_message(mocked, settings, site, connection,
                                                                                make_conversion):
    settings.ADSYNC_MAX_ATTEMPTS = 3
    make_conversion(site)
    mocked.post(APPLY_URL, json={"Type": "AdApiFaultDetail", "Errors": [
        {"Code": 0, "ErrorCode": "InternalError", "Message": "An internal error has occurred."}]}, status=500)
    for _ in range(3):
        Push.objects.update(next_attempt_at=timezone.now())
        flush_connection(connection)

    push = Push.objects.get()
    assert (push.status, push.attempts, push.error_code) == (Push.ERROR, 3, 0)
    assert push.error_message == "An internal error has occurred."


def test_throttling_pauses_the_account_for_60_seconds_or_retry_after(mocked, site, connection, make_conversion):
    make_conversion(site)
    mocked.post(APPLY_URL, status=429, headers={"Retry-After": "120"}, json={
        "Type": "AdApiFaultDetail", "Errors": [{"Code": 117, "ErrorCode": "CallRateExceeded", "Message": "Too many"}]})

    flush_connection(connection)
    second = flush_connection(Connection.objects.get(pk=connection.pk))

    connection.refresh_from_db()
    assert timezone.now() + timedelta(seconds=100) < connection.throttled_until
    assert Push.objects.get().status == Push.QUEUED
    assert "throttled" in second.stopped
    assert len(mocked.calls) == 1


@pytest.mark.parametrize("header, pause", [("2", 2), ("90", 90), ("7200", 15 * 60)])
def test_retry_after_is_honoured_as_given_shorter_or_longer_than_a_minute_up_to_15_minutes(
        mocked, site, connection, make_conversion, header, pause):
    make_conversion(site)
    mocked.post(APPLY_URL, status=429, headers={"Retry-After": header}, json={
        "Type": "AdApiFaultDetail", "Errors": [{"Code": 117, "ErrorCode": "CallRateExceeded", "Message": "Too many"}]})
    before = timezone.now()

    flush_connection(connection)

    connection.refresh_from_db()
    waited = (connection.throttled_until - before).total_seconds()
    assert pause - 1 < waited < pause + 2
    push = Push.objects.get()
    assert (push.status, push.attempts) == (Push.QUEUED, 0)
    assert abs((push.next_attempt_at - connection.throttled_until).total_seconds()) < 1


def test_a_throttle_without_retry_after_pauses_the_account_60_seconds(mocked, site, connection, make_conversion):
    make_conversion(site)
    mocked.post(APPLY_URL, status=429, json={
        "Type": "AdApiFaultDetail", "Errors": [{"Code": 117, "ErrorCode": "CallRateExceeded", "Message": "Too many"}]})
    before = timezone.now()

    flush_connection(connection)

    connection.refresh_from_db()
    assert 59 < (connection.throttled_until - before).total_seconds() < 62


def test_a_retry_after_given_as_an_http_date_is_honoured(mocked, site, connection, make_conversion):
    from email.utils import format_datetime

    make_conversion(site)
    when = timezone.now().replace(microsecond=0) + timedelta(seconds=30)
    mocked.post(APPLY_URL, status=429, headers={"Retry-After": format_datetime(when, usegmt=True)}, json={
        "Type": "AdApiFaultDetail", "Errors": [{"Code": 117, "ErrorCode": "CallRateExceeded", "Message": "Too many"}]})

    flush_connection(connection)

    connection.refresh_from_db()
    assert abs((connection.throttled_until - when).total_seconds()) < 2


def test_pending_identity_rows_are_not_sent(mocked, site, connection, make_conversion):
    make_conversion(site, msclkid="")
    mocked.post(APPLY_URL, **ok())

    flush_conversions()

    assert Push.objects.get().status == Push.PENDING_IDENTITY
    assert len(mocked.calls) == 0


def test_a_connection_that_is_not_active_keeps_its_rows_queued(mocked, site, make_connection, make_conversion):
    make_connection(site, status=Connection.TOKEN_EXPIRED)
    make_conversion(site)

    flush_conversions()

    assert Push.objects.get().status == Push.QUEUED
    assert len(mocked.calls) == 0


def test_an_expiring_token_is_refreshed_before_the_call_and_the_rotated_one_saved(mocked, site, make_connection,
                                                                                 make_conversion):
    conn = make_connection(site, token_expires_at=timezone.now() + timedelta(minutes=2))
    make_conversion(site)
    mocked.post(TOKEN_URL, json={"token_type": "Bearer", "expires_in": 3600, "access_token": "access-2",
                                 "refresh_token": "refresh-2", "scope": "https://ads.microsoft.com/msads.manage"})
    mocked.post(APPLY_URL, **ok())

    flush_connection(conn)

    assert [c.request.url for c in mocked.calls] == [TOKEN_URL, APPLY_URL]
    assert mocked.calls[1].request.headers["Authorization"] == "Bearer access-2"
    conn.refresh_from_db()
    assert (conn.access_token, conn.refresh_token) == ("access-2", "refresh-2")


def test_a_109_is_cured_by_one_refresh_and_one_retry(mocked, site, connection, make_conversion):
    make_conversion(site)
    expired = {"Type": "AdApiFaultDetail", "Errors": [
        {"Code": 109, "ErrorCode": "AuthenticationTokenExpired", "Message": "Authentication token expired."}]}
    mocked.post(APPLY_URL, status=401, json=expired)
    mocked.post(TOKEN_URL, json={"access_token": "access-2", "refresh_token": "refresh-2", "expires_in": 3600})
    mocked.post(APPLY_URL, **ok())

    flush_connection(connection)

    assert [c.request.url for c in mocked.calls] == [APPLY_URL, TOKEN_URL, APPLY_URL]
    assert Push.objects.get().status == Push.SENT


def test_overlapping_claims_never_share_a_row(site, connection):
    bulk_queue(site, 30)

    first = claim_batch(connection, 20)
    second = claim_batch(connection, 20)
    third = claim_batch(connection, 20)

    assert len(first) == 20 and len(second) == 10 and third == []
    assert not {p.pk for p in first} & {p.pk for p in second}


def test_rows_of_a_worker_that_died_are_reclaimed_after_the_lease(site, connection, settings):
    bulk_queue(site, 5)
    claim_batch(connection, 5)  # a worker claims, then dies before writing an outcome
    assert claim_batch(connection, 5) == []

    Push.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))

    assert len(claim_batch(connection, 5)) == 5


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(db_connection.vendor != "postgresql", reason="real concurrent transactions need PostgreSQL")
def test_two_workers_flushing_at_once_send_each_row_exactly_once(mocked, site, connection):
    bulk_queue(site, 3000)
    mocked.post(APPLY_URL, **ok())
    barrier = threading.Barrier(2)

    def worker():
        from django.db import connection as thread_db

        barrier.wait()
        flush_connection(Connection.objects.get(pk=connection.pk), batch_size=250)
        thread_db.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    sent_ids = [item["MicrosoftClickId"] for body in sent_bodies(mocked) for item in body["OfflineConversions"]]
    assert len(sent_ids) == 3000 == len(set(sent_ids))
    assert Push.objects.filter(status=Push.SENT).count() == 3000
